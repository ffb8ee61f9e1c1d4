"""The system columns every storage table has, in one list: their names, types and what they mean."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SystemColumn:
    name: str
    ddl: str  # type and constraints, as in CREATE TABLE
    meaning: str


SYSTEM_COLUMNS: tuple[SystemColumn, ...] = (
    SystemColumn("_event_id", "text", "the event's id (hr-event-id; else topic:partition:offset)"),
    SystemColumn("_received_at", "timestamptz", "when ingest received the event"),
    SystemColumn("_inserted_at", "timestamptz NOT NULL DEFAULT now()", "when transform wrote the row"),
    SystemColumn("_overflow", "jsonb", "fields without a column (past the column limit, or only ever null)"),
    SystemColumn("_source_partition", "integer", "the ingest partition of the event the row came from"),
    SystemColumn("_source_offset", "bigint", "the ingest offset of the event the row came from"),
    # The transaction that last wrote the row. Exports read rows by it: every transaction below the oldest
    # one still running has ended, so [last horizon, snapshot xmin) misses nothing and takes nothing twice.
    SystemColumn("_xid", "xid8 NOT NULL DEFAULT pg_current_xact_id()", "the transaction that last wrote the row"),
)

SYSTEM_COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in SYSTEM_COLUMNS)
# The columns a writer sets itself; `_xid` (and `_inserted_at` where a statement omits it) come from defaults.
WRITTEN_SYSTEM_COLUMNS: tuple[str, ...] = (
    "_event_id",
    "_received_at",
    "_inserted_at",
    "_overflow",
    "_source_partition",
    "_source_offset",
)
# System columns a reader sees as fields of the row (`_overflow` is spread into the row, `_xid` stays internal).
VISIBLE_SYSTEM_COLUMNS: tuple[str, ...] = ("_event_id", "_received_at", "_inserted_at")
TRANSACTION_COLUMN = "_xid"


def create_table_sql(qualified_table: str) -> str:
    """The CREATE TABLE of a new, empty storage, with its transaction index (what export runs scan by)."""
    columns = ", ".join(f"{c.name} {c.ddl}" for c in SYSTEM_COLUMNS)
    return f"CREATE TABLE {qualified_table} ({columns})"


def transaction_index_sql(qualified_table: str, index_name: str) -> str:
    return f"CREATE INDEX IF NOT EXISTS {index_name} ON {qualified_table} ({TRANSACTION_COLUMN})"
