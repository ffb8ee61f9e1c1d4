"""The batch state machine: rows staged per batch, counted by distinct event id, applied whole in stream order.

A batch (a collector's slice, a file import, a DataFrame load) is its row events, each with `hr-batch-id`, and
one end marker announcing the row count. States in headrace.batches:

    open ──(count reached)──► complete ──(every earlier batch on the marker's partition applied)──► applied
      │                          │
      └──(more rows than announced, an apply Postgres refuses, or still short long after its marker)──► failed

Complete batches are applied in the order their end markers were read on their partition, so a later snapshot
always wins and two merge batches completing in one poll apply oldest first. A batch id is applied once: the same
batch sent again is counted as duplicates and dropped. Every step runs in the caller's write transaction, under
a per-storage advisory lock, so workers sharing a storage's partitions take turns.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from headrace.catalog import Storage
from headrace.catalog.storages import STAGING_SCHEMA, widening_expression
from headrace.models import ColumnType, Model
from headrace.postgres import Connection, quote_ident
from transform.events import Event
from transform.failures import describe, is_contention, is_unavailable
from transform.load_sql import apply_staged
from transform.planning import OVERFLOW, SOURCE_OFFSET, SOURCE_PARTITION, Plan, row_tuples, table_columns

log = logging.getLogger(__name__)

_TYPE_OF_POSTGRES = {
    "bigint": ColumnType.INTEGER,
    "double precision": ColumnType.FLOAT,
    "boolean": ColumnType.BOOLEAN,
    "date": ColumnType.DATE,
    "timestamp with time zone": ColumnType.DATETIME,
    "text": ColumnType.STRING,
    "jsonb": ColumnType.JSON,
}


def staging_table_name(storage: Storage, batch_id: str) -> str:
    return f"{storage.id.hex}_{hashlib.sha1(batch_id.encode()).hexdigest()[:16]}"


@dataclass
class BatchOutcome:
    rows: int = 0  # rows applied batches put in the storage
    deleted: int = 0
    rejected: int = 0  # rows of failed batches arriving late
    duplicates: int = 0  # events of batches seen before (re-sent rows, re-sent batches)
    applied: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def lock_storage_batches(conn: Connection, storage: Storage) -> None:
    """One writer of a storage's batches at a time, until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"headrace.batches:{storage.id}")


class BatchBook:
    """The batches of one storage, as one write transaction sees and changes them."""

    def __init__(self, conn: Connection, storage: Storage, model: Model, now: datetime) -> None:
        self.conn, self.storage, self.model, self.now = conn, storage, model, now
        self.outcome = BatchOutcome()

    async def take(
        self,
        batch_rows: list[tuple[Event, dict[str, Any]]],
        plan: Plan,
        rejected: list[tuple[Event, str]],
        reject: Any,
        timeout_seconds: float,
    ) -> None:
        """Stage batch rows, count filtered and rejected batch events, read end markers, then apply what is ready.

        `reject` is the writer's coroutine that keeps rows in rejected_rows with a reason.
        """
        rows: dict[str, list[tuple[Event, dict[str, Any]]]] = {}
        for event, record in batch_rows:
            rows.setdefault(event.batch_id or "", []).append((event, record))
        seen: dict[str, list[str]] = {}  # ids of batch events that are not staged (rejected, filtered out)
        for event in [e for e, _ in rejected] + plan.dropped:
            if event.batch_id is not None:
                seen.setdefault(event.batch_id, []).append(event.event_id)
        markers: dict[str, Event] = {}
        for marker in plan.markers:
            markers.setdefault(marker.batch_id or "", marker)
        batch_ids = sorted(set(rows) | set(seen) | set(markers))
        if not batch_ids:
            return
        await lock_storage_batches(self.conn, self.storage)
        for batch_id in batch_ids:
            await self._take_one(
                batch_id, rows.get(batch_id, []), seen.get(batch_id, []), markers.get(batch_id), plan, reject
            )
        await self.apply_ready(timeout_seconds)

    async def _take_one(
        self,
        batch_id: str,
        rows: list[tuple[Event, dict[str, Any]]],
        seen: list[str],
        marker: Event | None,
        plan: Plan,
        reject: Any,
    ) -> None:
        storage, conn = self.storage, self.conn
        staging = staging_table_name(storage, batch_id)
        await conn.execute(
            "INSERT INTO headrace.batches (storage_id, batch_id, staging_table, load_mode) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING",
            storage.id,
            batch_id,
            staging,
            plan.batch_modes.get(batch_id, storage.load_mode),
        )
        batch = await conn.fetchrow(
            "SELECT state, reason, expected_rows FROM headrace.batches WHERE storage_id = $1 AND batch_id = $2",
            storage.id,
            batch_id,
        )
        assert batch is not None  # inserted just above, if it was not there already
        state = batch["state"]
        if state == "applied":
            # The same batch again (a collector re-sending after a crash, a client retrying a load): applied once.
            await self._duplicates(batch_id, len(rows) + len(seen))
            return
        if state == "failed":
            late = [(e, f"batch {batch_id!r} failed: {batch['reason']}") for e, _ in rows]
            if late:
                await reject(late)
                self.outcome.rejected += len(late)
            return
        # A batch counts distinct event ids: a re-sent copy arriving before the first copy's end marker
        # (a collector restarted mid-send) must neither stage rows twice nor overrun the announced count.
        new_ids = {
            r["event_id"]
            for r in await conn.fetch(
                "INSERT INTO headrace.batch_events (storage_id, batch_id, event_id)"
                " SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
                storage.id,
                batch_id,
                [e.event_id for e, _ in rows] + seen,
            )
        }
        unique: dict[str, tuple[Event, dict[str, Any]]] = {}
        for event, record in rows:
            if event.event_id in new_ids:
                unique.setdefault(event.event_id, (event, record))
        fresh_seen = len({event_id for event_id in seen if event_id in new_ids})
        await self._duplicates(batch_id, len(rows) + len(seen) - len(unique) - fresh_seen)
        if unique:
            await self._stage(staging, list(unique.values()), plan.staged_deletes)
        expected = batch["expected_rows"]
        if marker is not None and expected is None:
            expected = marker.batch_rows
            await conn.execute(
                "UPDATE headrace.batches SET expected_rows = $3, marker_partition = $4, marker_offset = $5,"
                " marker_read_at = $6 WHERE storage_id = $1 AND batch_id = $2",
                storage.id,
                batch_id,
                expected,
                marker.partition,
                marker.offset,
                self.now,
            )
        elif marker is not None and marker.batch_rows != expected:
            await self._fail(batch_id, f"a second end marker announces {marker.batch_rows} rows, the first {expected}")
            return
        taken = await conn.fetchval(
            "UPDATE headrace.batches SET rows_seen = rows_seen + $3 WHERE storage_id = $1 AND batch_id = $2"
            " RETURNING rows_seen",
            storage.id,
            batch_id,
            len(unique) + fresh_seen,
        )
        if expected is None or taken < expected:
            return
        if taken > expected:
            await self._fail(batch_id, f"{taken} row events for an end marker announcing {expected}")
            return
        if state == "open":
            await conn.execute(
                "UPDATE headrace.batches SET state = 'complete' WHERE storage_id = $1 AND batch_id = $2",
                storage.id,
                batch_id,
            )

    async def _duplicates(self, batch_id: str, count: int) -> None:
        if count <= 0:
            return
        self.outcome.duplicates += count
        await self.conn.execute(
            "UPDATE headrace.batches SET duplicates = duplicates + $3 WHERE storage_id = $1 AND batch_id = $2",
            self.storage.id,
            batch_id,
            count,
        )

    async def _fail(self, batch_id: str, reason: str) -> None:
        """The batch never changes the storage; its staging table stays for inspection."""
        await self.conn.execute(
            "UPDATE headrace.batches SET state = 'failed', reason = $3 WHERE storage_id = $1 AND batch_id = $2",
            self.storage.id,
            batch_id,
            reason,
        )
        self.outcome.failed.append(batch_id)
        log.error("batch failed", extra={"storage": self.storage.name, "batch": batch_id, "reason": reason})

    async def _stage(
        self, staging: str, rows: list[tuple[Event, dict[str, Any]]], staged_deletes: set[tuple[int, int]]
    ) -> None:
        qualified = f"{quote_ident(STAGING_SCHEMA)}.{quote_ident(staging)}"
        await self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {qualified} (LIKE {self.storage.qualified_table} INCLUDING DEFAULTS)"
        )
        await self._sync_staging(qualified)
        tuples = row_tuples(self.model, rows, self.now)
        if staged_deletes:
            # A staged merge delete is marked in _overflow, which the apply step reads and never copies.
            tuples = [
                (*t[:OVERFLOW], {"_op": "d"}, *t[OVERFLOW + 1 :])
                if (t[SOURCE_PARTITION], t[SOURCE_OFFSET]) in staged_deletes
                else t
                for t in tuples
            ]
        await self.conn.copy_records_to_table(
            staging, schema_name=STAGING_SCHEMA, columns=table_columns(self.model), records=tuples
        )

    async def apply_ready(self, timeout_seconds: float) -> None:
        """Apply complete batches in end-marker order per partition; fail those still short long after their marker.

        The caller holds the storage's batch lock (lock_storage_batches).
        """
        pending = await self.conn.fetch(
            "SELECT batch_id, state, staging_table, load_mode, marker_partition, marker_read_at, rows_seen,"
            " expected_rows FROM headrace.batches WHERE storage_id = $1 AND state IN ('open', 'complete')"
            " AND marker_partition IS NOT NULL ORDER BY marker_partition, marker_offset",
            self.storage.id,
        )
        blocked: set[int] = set()  # partitions whose chain waits for an incomplete batch
        overdue = self.now - timedelta(seconds=timeout_seconds)
        for batch in pending:
            partition = batch["marker_partition"]
            if partition in blocked:
                continue
            if batch["state"] == "complete":
                await self._apply(batch["batch_id"], batch["staging_table"], batch["load_mode"])
            elif batch["marker_read_at"] < overdue:
                await self._fail(
                    batch["batch_id"],
                    f"incomplete: {batch['rows_seen']} of {batch['expected_rows']} row events arrived within"
                    f" {timeout_seconds:g} s of its end marker",
                )
            else:
                blocked.add(partition)

    async def _apply(self, batch_id: str, staging: str, mode: str) -> None:
        qualified = f"{quote_ident(STAGING_SCHEMA)}.{quote_ident(staging)}"
        try:
            # A savepoint: an apply Postgres refuses (a key the index rejects, say) fails this batch, not the write.
            async with self.conn.transaction():
                if not await self.conn.fetchval("SELECT to_regclass($1)", f"{STAGING_SCHEMA}.{staging}"):
                    rows = deleted = 0  # every event of the batch was filtered out or rejected
                    if mode == "replace":
                        status = await self.conn.execute(f"DELETE FROM {self.storage.qualified_table}")
                        deleted = int(status.split()[-1])
                else:
                    await self._sync_staging(qualified)
                    rows, deleted = await apply_staged(self.conn, self.storage, self.model, qualified, mode, self.now)
                    await self.conn.execute(f"DROP TABLE {qualified}")
        except Exception as exc:
            if is_unavailable(exc) or is_contention(exc):
                raise
            await self._fail(batch_id, f"applying the batch failed: {describe(exc)}")
            return
        await self.conn.execute(
            "DELETE FROM headrace.batch_events WHERE storage_id = $1 AND batch_id = $2", self.storage.id, batch_id
        )
        await self.conn.execute(
            "UPDATE headrace.batches SET state = 'applied', applied_at = $3 WHERE storage_id = $1 AND batch_id = $2",
            self.storage.id,
            batch_id,
            self.now,
        )
        self.outcome.rows += rows
        self.outcome.deleted += deleted
        self.outcome.applied.append(batch_id)

    async def _sync_staging(self, qualified: str) -> None:
        """Bring a staging table's columns up to the model, which may have grown or widened since it was created."""
        found = {
            r["attname"]: r["type"]
            for r in await self.conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                qualified,
            )
        }
        clauses = []
        for column in self.model.columns:
            name = quote_ident(column.name)
            if column.name not in found:
                clauses.append(f"ADD COLUMN {name} {column.type.postgres}")
                continue
            before = _TYPE_OF_POSTGRES.get(found[column.name])
            if before is not None and before is not column.type:
                expression = widening_expression(name, before, column.type)
                clauses.append(f"ALTER COLUMN {name} TYPE {column.type.postgres} USING {expression}")
        if clauses:
            await self.conn.execute(f"ALTER TABLE {qualified} {', '.join(clauses)}")
