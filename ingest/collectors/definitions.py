"""Collector definitions (source, extract mode, target, schedule) and their Postgres store, credentials sealed."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import asyncpg
from croniter import croniter
from pydantic import Field, field_validator, model_validator

from headrace.catalog.storages import NAME_PATTERN
from headrace.outbound import OutboundPolicy
from headrace.secrets import SealedDefinitions, SecretFields, redact
from headrace.settings import Settings
from ingest.collectors.source_models import FILE_SOURCES, Source, Strict, source_hosts

EXTRACT_MODES = ("snapshot", "incremental-appends", "incremental-updates")
# Each extract mode loads with the load mode that gives its batches their meaning (seed 003).
LOAD_MODE_OF = {"snapshot": "replace", "incremental-appends": "append", "incremental-updates": "merge"}
# Credentials are sealed in Postgres; shown, only the allowlisted fields are in clear. A source URL or DSN is a
# credential as a whole (its path or host may be what grants access), and so is every header value.
SECRETS = SecretFields(
    sealed=frozenset({"dsn", "url", "password", "private_key", "secret_access_key", "session_token"}),
    sealed_maps=frozenset({"headers"}),
    shown=frozenset(
        {
            *("name", "storage", "extract_mode", "cursor_column", "primary_key", "soft_delete_column"),
            *("delete_missing", "every_seconds", "cron", "kind", "table", "query", "pattern", "format", "delimiter"),
            *("host", "port", "user", "host_key", "ca_cert", "bucket", "region", "access_key_id", "records_path"),
            *("pagination", "page_param", "size_param", "page_size", "first_page", "next_path", "max_pages"),
        }
    ),
    urls=frozenset({"dsn", "url", "endpoint_url"}),
    headers=frozenset({"headers"}),
)


class CollectorNotFound(LookupError):
    pass


class CollectorExists(ValueError):
    pass


class CollectorDefinition(Strict):
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
        files = isinstance(self.source, FILE_SOURCES)
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

    def to_json(self) -> dict[str, Any]:
        """The collector as the API and CLI show it: only allowlisted fields in clear."""
        return SECRETS.mask(self.definition.model_dump(mode="json")) | {
            "id": str(self.id),
            "load_mode": self.definition.load_mode,
            "cursor": self.cursor,
            "batches": self.batch_seq,
            "next_run_at": self.next_run_at,
            "last_run_at": self.last_run_at,
            "last_error": redact(self.last_error) if self.last_error else self.last_error,
        }


_COLUMNS = "id, definition, cursor, batch_seq, next_run_at, last_run_at, last_error"
_BATCH_COLUMNS = (
    "batch_id, seq, load_mode, extract_mode, cursor_from, cursor_to, files, replay_of, status, rows, deletes,"
    " topic, offsets, error, created_at, sent_at"
)


class CollectorStore:
    """Collectors, their cursors and their batches in headrace.collectors / headrace.collector_batches.

    Definitions are stored with their credentials sealed under HEADRACE_SECRET_KEY (see SealedDefinitions).
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.sealed = SealedDefinitions(pool, settings, SECRETS, "headrace.collectors")
        self.outbound = OutboundPolicy.from_settings(settings)

    async def _collector(self, row: asyncpg.Record) -> Collector:
        return Collector(
            id=row["id"],
            definition=CollectorDefinition.model_validate(await self.sealed.open(row["id"], row["definition"])),
            cursor=row["cursor"],
            batch_seq=row["batch_seq"],
            next_run_at=row["next_run_at"],
            last_run_at=row["last_run_at"],
            last_error=row["last_error"],
        )

    def check_hosts(self, definition: CollectorDefinition) -> None:
        """Refuse an internal address the source names outright (422); a name is resolved and checked at each run."""
        for host, _ in source_hosts(definition.source):
            self.outbound.check_literal(host)

    async def create(self, definition: CollectorDefinition) -> Collector:
        self.check_hosts(definition)
        next_run = definition.next_run(datetime.now(UTC))
        try:
            row = await self.pool.fetchrow(
                f"INSERT INTO headrace.collectors (id, name, definition, next_run_at) VALUES ($1, $2, $3, $4)"
                f" RETURNING {_COLUMNS}",
                uuid.uuid4(),
                definition.name,
                self.sealed.seal(definition.model_dump(mode="json")),
                next_run,
            )
        except asyncpg.UniqueViolationError as exc:
            raise CollectorExists(f"collector {definition.name!r} exists already") from exc
        assert row is not None  # INSERT … RETURNING gives its row
        return await self._collector(row)

    async def replace(self, name: str, given: dict[str, Any]) -> Collector:
        """Change a collector's definition; its cursor and batches stay (a new source or cursor column starts from
        the cursor already reached), and credentials sent back masked are kept."""
        current = await self.get(name)
        merged = SECRETS.keep_masked(given, current.definition.model_dump(mode="json"))
        definition = CollectorDefinition.model_validate(merged | {"name": name})
        self.check_hosts(definition)
        row = await self.pool.fetchrow(
            f"UPDATE headrace.collectors SET definition = $2, next_run_at = $3 WHERE id = $1 RETURNING {_COLUMNS}",
            current.id,
            self.sealed.seal(definition.model_dump(mode="json")),
            definition.next_run(datetime.now(UTC)),
        )
        assert row is not None  # found above
        return await self._collector(row)

    async def get(self, name: str, conn: asyncpg.Connection | None = None) -> Collector:
        row = await (conn or self.pool).fetchrow(f"SELECT {_COLUMNS} FROM headrace.collectors WHERE name = $1", name)
        if row is None:
            raise CollectorNotFound(f"no collector named {name!r}")
        return await self._collector(row)

    async def list(self) -> list[Collector]:
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM headrace.collectors ORDER BY name")
        return [await self._collector(r) for r in rows]

    async def delete(self, name: str) -> None:
        status = await self.pool.execute("DELETE FROM headrace.collectors WHERE name = $1", name)
        if status.endswith(" 0"):
            raise CollectorNotFound(f"no collector named {name!r}")

    async def due(self, now: datetime) -> builtins.list[Collector]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM headrace.collectors WHERE next_run_at <= $1 ORDER BY next_run_at", now
        )
        return [await self._collector(r) for r in rows]

    async def finished(self, collector: Collector, started: datetime, error: str | None) -> None:
        """Record a run's end and schedule the next one (from the run's start, so runs keep their rhythm)."""
        next_run = collector.definition.next_run(max(started, datetime.now(UTC) - timedelta(seconds=1)))
        await self.pool.execute(
            "UPDATE headrace.collectors SET last_run_at = $2, last_error = $3, next_run_at = $4 WHERE id = $1",
            collector.id,
            started,
            redact(error) if error else error,
            next_run,
        )

    # -- batches ------------------------------------------------------------------------------------------------

    async def batches(self, collector: Collector, limit: int = 100) -> builtins.list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_BATCH_COLUMNS} FROM headrace.collector_batches WHERE collector_id = $1"
            " ORDER BY created_at DESC, seq DESC LIMIT $2",
            collector.id,
            limit,
        )
        return [_shown_batch(r) for r in rows]

    async def batch(self, collector: Collector, batch_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            f"SELECT {_BATCH_COLUMNS} FROM headrace.collector_batches WHERE collector_id = $1 AND batch_id = $2",
            collector.id,
            batch_id,
        )
        if row is None:
            raise CollectorNotFound(f"collector {collector.name!r} has no batch {batch_id!r}")
        return _shown_batch(row)

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
        offsets: dict[str, builtins.list[int]],
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
            redact(error),
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
            redact(error),
        )


def _shown_batch(row: asyncpg.Record) -> dict[str, Any]:
    batch = dict(row)
    if batch["error"]:
        batch["error"] = redact(batch["error"])
    return batch
