"""Collector definitions (source, extract mode, target, schedule), their secrets masking and their Postgres store."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headrace.catalog.storages import NAME_PATTERN
from headrace.s3 import S3Connection

EXTRACT_MODES = ("snapshot", "incremental-appends", "incremental-updates")
# Each extract mode loads with the load mode that gives its batches their meaning (seed 003).
LOAD_MODE_OF = {"snapshot": "replace", "incremental-appends": "append", "incremental-updates": "merge"}
MASK = "***"


class CollectorNotFound(LookupError):
    pass


class CollectorExists(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresSource(_Strict):
    kind: Literal["postgres"] = "postgres"
    dsn: str
    table: str | None = None  # `name` or `schema.name`
    query: str | None = None  # any SELECT; it is wrapped as a subquery

    @model_validator(mode="after")
    def _table_or_query(self) -> PostgresSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("a Postgres source needs a table or a query (one of them)")
        return self


class _FileSource(_Strict):
    pattern: str  # a glob on the file path (SFTP) or the object key (S3), e.g. /data/orders_*.csv
    format: Literal["csv", "ndjson"] = "csv"
    delimiter: str = ","

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, delimiter: str) -> str:
        if len(delimiter) != 1:
            raise ValueError("the delimiter is one character")
        return delimiter


class SftpSource(_FileSource):
    kind: Literal["sftp"] = "sftp"
    host: str
    port: int = 22
    user: str
    private_key: str | None = None  # the key's text (OpenSSH or PEM)
    password: str | None = None
    host_key: str | None = None  # the server's public key; unset, any host key is accepted

    @model_validator(mode="after")
    def _needs_credentials(self) -> SftpSource:
        if not self.private_key and not self.password:
            raise ValueError("an SFTP source needs a private key or a password")
        return self


class S3Source(_FileSource, S3Connection):
    kind: Literal["s3"] = "s3"
    bucket: str


class HttpSource(_Strict):
    kind: Literal["http"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    records_path: str | None = None  # dotted path to the records' list in each page, e.g. data.items; unset: the body
    pagination: Literal["none", "page", "offset", "next"] = "none"
    page_param: str = "page"  # page: the page number; offset: the offset
    size_param: str | None = None  # the page size's parameter, when the API takes one
    page_size: int = Field(100, gt=0)
    first_page: int = 1
    next_path: str | None = None  # next: dotted path to the next page's URL (null or missing on the last page)
    max_pages: int = Field(10_000, gt=0)

    @model_validator(mode="after")
    def _next_needs_path(self) -> HttpSource:
        if self.pagination == "next" and not self.next_path:
            raise ValueError("next-link pagination needs next_path")
        return self


Source = Annotated[PostgresSource | SftpSource | S3Source | HttpSource, Field(discriminator="kind")]


class CollectorDefinition(_Strict):
    name: str
    storage: str
    source: Source
    extract_mode: Literal["snapshot", "incremental-appends", "incremental-updates"] = "snapshot"
    cursor_column: str | None = None
    primary_key: list[str] = Field(default_factory=list)
    soft_delete_column: str | None = None  # incremental-updates: a row whose value here is true (or set) is deleted
    delete_missing: bool = False  # incremental-updates, Postgres: delete storage keys the source no longer has
    every_seconds: float | None = Field(None, gt=0)
    cron: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError(
                "a collector name has 1 to 63 letters, digits, '_' or '-', starting with a letter or digit"
            )
        return name

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str | None) -> str | None:
        if cron is not None and not croniter.is_valid(cron):
            raise ValueError(f"not a cron expression: {cron!r}")
        return cron

    @model_validator(mode="after")
    def _consistent(self) -> CollectorDefinition:
        if self.every_seconds is not None and self.cron is not None:
            raise ValueError("a schedule is an interval or a cron expression, not both")
        files = self.source.kind in ("sftp", "s3")
        if self.extract_mode != "snapshot" and not files and not self.cursor_column:
            raise ValueError(f"{self.extract_mode} needs a cursor column")
        if self.extract_mode == "incremental-updates" and not self.primary_key:
            raise ValueError("incremental-updates needs a primary key")
        if self.delete_missing and (self.extract_mode != "incremental-updates" or self.source.kind != "postgres"):
            raise ValueError("delete_missing is for incremental-updates from a Postgres source")
        return self

    @property
    def load_mode(self) -> str:
        return LOAD_MODE_OF[self.extract_mode]

    def next_run(self, after: datetime) -> datetime | None:
        """When the schedule next fires after `after`; None for a collector run only on demand."""
        if self.every_seconds is not None:
            return after + timedelta(seconds=self.every_seconds)
        if self.cron is not None:
            return croniter(self.cron, after).get_next(datetime)
        return None


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ***, so it can be shown."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return re.sub(r"(password\s*=\s*)\S+", rf"\g<1>{MASK}", dsn)
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def public_definition(definition: CollectorDefinition) -> dict[str, Any]:
    """The definition as the API and CLI show it: passwords, keys and secret headers masked."""
    data = definition.model_dump(mode="json")
    source = data["source"]
    if "dsn" in source:
        source["dsn"] = mask_dsn(source["dsn"])
    for secret in ("private_key", "password", "secret_access_key", "session_token"):
        if source.get(secret):
            source[secret] = MASK
    for header in source.get("headers") or {}:
        if header.lower() in ("authorization", "x-api-key", "cookie", "proxy-authorization"):
            source["headers"][header] = MASK
    return data


def encode_cursor(value: Any) -> dict[str, Any] | None:
    """A cursor value as tagged JSON, so it goes back to the source query with its own type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    return {"type": "text", "value": str(value)}


def decode_cursor(data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    kind, value = data["type"], data["value"]
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    return value


def collector_lock_key(collector_id: uuid.UUID) -> int:
    """The advisory-lock key of a collector's runs: one run of a collector at a time across every process."""
    return int.from_bytes(collector_id.bytes[:8], "big", signed=True)


@dataclass(frozen=True)
class Collector:
    id: uuid.UUID
    definition: CollectorDefinition
    cursor: dict[str, Any] | None
    batch_seq: int
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_error: str | None

    @property
    def name(self) -> str:
        return self.definition.name

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Collector:
        return cls(
            id=row["id"],
            definition=CollectorDefinition.model_validate(row["definition"]),
            cursor=row["cursor"],
            batch_seq=row["batch_seq"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            last_error=row["last_error"],
        )

    def to_json(self) -> dict[str, Any]:
        return public_definition(self.definition) | {
            "id": str(self.id),
            "load_mode": self.definition.load_mode,
            "cursor": self.cursor,
            "batches": self.batch_seq,
            "next_run_at": self.next_run_at,
            "last_run_at": self.last_run_at,
            "last_error": self.last_error,
        }


_COLUMNS = "id, definition, cursor, batch_seq, next_run_at, last_run_at, last_error"
_BATCH_COLUMNS = (
    "batch_id, seq, load_mode, extract_mode, cursor_from, cursor_to, files, replay_of, status, rows, deletes,"
    " topic, offsets, error, created_at, sent_at"
)


class CollectorStore:
    """Collectors, their cursors and their batches in headrace.collectors / headrace.collector_batches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, definition: CollectorDefinition) -> Collector:
        next_run = definition.next_run(datetime.now(UTC))
        try:
            row = await self.pool.fetchrow(
                f"INSERT INTO headrace.collectors (id, name, definition, next_run_at) VALUES ($1, $2, $3, $4)"
                f" RETURNING {_COLUMNS}",
                uuid.uuid4(),
                definition.name,
                definition.model_dump(mode="json"),
                next_run,
            )
        except asyncpg.UniqueViolationError as exc:
            raise CollectorExists(f"collector {definition.name!r} exists already") from exc
        return Collector.from_row(row)

    async def get(self, name: str, conn: asyncpg.Connection | None = None) -> Collector:
        row = await (conn or self.pool).fetchrow(f"SELECT {_COLUMNS} FROM headrace.collectors WHERE name = $1", name)
        if row is None:
            raise CollectorNotFound(f"no collector named {name!r}")
        return Collector.from_row(row)

    async def list(self) -> list[Collector]:
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM headrace.collectors ORDER BY name")
        return [Collector.from_row(r) for r in rows]

    async def delete(self, name: str) -> None:
        status = await self.pool.execute("DELETE FROM headrace.collectors WHERE name = $1", name)
        if status.endswith(" 0"):
            raise CollectorNotFound(f"no collector named {name!r}")

    async def due(self, now: datetime) -> list[Collector]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM headrace.collectors WHERE next_run_at <= $1 ORDER BY next_run_at", now
        )
        return [Collector.from_row(r) for r in rows]

    async def finished(self, collector: Collector, started: datetime, error: str | None) -> None:
        """Record a run's end and schedule the next one (from the run's start, so runs keep their rhythm)."""
        next_run = collector.definition.next_run(max(started, datetime.now(UTC) - timedelta(seconds=1)))
        await self.pool.execute(
            "UPDATE headrace.collectors SET last_run_at = $2, last_error = $3, next_run_at = $4 WHERE id = $1",
            collector.id,
            started,
            error,
            next_run,
        )

    # -- batches ------------------------------------------------------------------------------------------------

    async def batches(self, collector: Collector, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_BATCH_COLUMNS} FROM headrace.collector_batches WHERE collector_id = $1"
            " ORDER BY created_at DESC, seq DESC LIMIT $2",
            collector.id,
            limit,
        )
        return [dict(r) for r in rows]

    async def batch(self, collector: Collector, batch_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_BATCH_COLUMNS} FROM headrace.collector_batches WHERE collector_id = $1 AND batch_id = $2",
            collector.id,
            batch_id,
        )
        if row is None:
            raise CollectorNotFound(f"collector {collector.name!r} has no batch {batch_id!r}")
        return dict(row)

    async def pending(self, collector: Collector) -> dict[str, Any] | None:
        """The batch a crashed run left pending (produced maybe, cursor not moved), to send again as it was."""
        row = await self.pool.fetchrow(
            f"SELECT {_BATCH_COLUMNS} FROM headrace.collector_batches WHERE collector_id = $1 AND status = 'pending'"
            " AND replay_of IS NULL ORDER BY seq LIMIT 1",
            collector.id,
        )
        return dict(row) if row is not None else None

    async def record_pending(self, collector: Collector, batch: dict[str, Any]) -> None:
        await self.pool.execute(
            "INSERT INTO headrace.collector_batches (collector_id, batch_id, seq, load_mode, extract_mode,"
            " cursor_from, cursor_to, files, replay_of, topic) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (collector_id, batch_id) DO NOTHING",
            collector.id,
            batch["batch_id"],
            batch["seq"],
            batch["load_mode"],
            batch["extract_mode"],
            batch.get("cursor_from"),
            batch.get("cursor_to"),
            batch.get("files"),
            batch.get("replay_of"),
            batch["topic"],
        )

    async def mark_sent(
        self,
        collector: Collector,
        batch: dict[str, Any],
        rows: int,
        deletes: int,
        offsets: dict[str, list[int]],
        advance: bool,
    ) -> None:
        """The batch is durably in Kafka: mark it sent and move the cursor past it, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE headrace.collector_batches SET status = 'sent', rows = $3, deletes = $4, offsets = $5,"
                " cursor_to = coalesce(cursor_to, $6), sent_at = now(), error = NULL"
                " WHERE collector_id = $1 AND batch_id = $2",
                collector.id,
                batch["batch_id"],
                rows,
                deletes,
                offsets,
                batch.get("cursor_to"),
            )
            if advance:
                await conn.execute(
                    "UPDATE headrace.collectors SET cursor = coalesce($2, cursor), batch_seq = greatest(batch_seq, $3)"
                    " WHERE id = $1",
                    collector.id,
                    batch.get("cursor_to"),
                    batch["seq"],
                )

    async def mark_failed(self, collector: Collector, batch_id: str, error: str) -> None:
        """A replay that failed; a collector's own batch stays pending instead, to be sent again."""
        await self.pool.execute(
            "UPDATE headrace.collector_batches SET status = 'failed', error = $3 WHERE collector_id = $1"
            " AND batch_id = $2",
            collector.id,
            batch_id,
            error,
        )

    async def replays(self, collector: Collector, batch_id: str) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM headrace.collector_batches WHERE collector_id = $1 AND replay_of = $2",
            collector.id,
            batch_id,
        )

    async def note_error(self, collector: Collector, batch_id: str, error: str) -> None:
        await self.pool.execute(
            "UPDATE headrace.collector_batches SET error = $3 WHERE collector_id = $1 AND batch_id = $2",
            collector.id,
            batch_id,
            error,
        )
