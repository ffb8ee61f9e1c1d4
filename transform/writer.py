"""Writes one topic's batch of events into its storage: ETL, model changes, then rows and positions in one transaction.

Per load mode:
- append: every event is a row, COPYed straight into the table (measured faster than staging + INSERT … SELECT);
- merge: the batch is reduced to the last event per primary key; upserts are COPYed into a temporary table and
  applied with one INSERT … SELECT … ON CONFLICT DO UPDATE, deletes with one DELETE … USING unnest(…);
- replace: rows are COPYed into their batch's staging table (headrace_staging, in Postgres so a crash loses
  nothing); when the batch's end marker count is reached, the storage's contents become the batch in the
  same transaction (DELETE + INSERT … SELECT, so readers see the old rows or the new ones, never a mix).
"""

from __future__ import annotations

import hashlib
import logging
import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.catalog.storages import widening_expression
from headrace.etl import Dropped, EtlConfig, EvaluationError
from headrace.models import ColumnType, Model
from headrace.models.inference import convert
from headrace.positions import Positions
from headrace.postgres import quote_ident

log = logging.getLogger(__name__)

SYSTEM_COLUMNS = ("_event_id", "_received_at", "_inserted_at", "_overflow", "_source_partition", "_source_offset")
STAGING_SCHEMA = "headrace_staging"
_TYPE_OF_POSTGRES = {
    "bigint": ColumnType.INTEGER,
    "double precision": ColumnType.FLOAT,
    "boolean": ColumnType.BOOLEAN,
    "date": ColumnType.DATE,
    "timestamp with time zone": ColumnType.DATETIME,
    "text": ColumnType.STRING,
    "jsonb": ColumnType.JSON,
}


@dataclass(frozen=True)
class Event:
    """One decoded ingest event with where it came from; `record` is None for tombstones and batch end markers."""

    record: dict[str, Any] | None
    event_id: str
    received_at: datetime | None
    partition: int
    offset: int
    delete: bool = False  # a merge delete: `_op: d`, or a tombstone whose key is in `record`
    batch_id: str | None = None
    batch_rows: int | None = None  # set on a batch's end marker
    load_mode: str | None = None  # the batch's own load mode (hr-load-mode), overriding the storage's


@dataclass
class WriteResult:
    load_mode: str = "append"
    rows: int = 0
    deleted: int = 0
    rejected: int = 0
    dropped: int = 0
    model_changed: bool = False
    published: list[dict[str, Any]] = field(default_factory=list)  # rows for the rows topic, in partition order
    swapped: list[tuple[str, datetime]] = field(default_factory=list)  # replace batches now in the storage


@dataclass
class _Prepared:
    """The batch after ETL and load-mode rules: what to write, what to delete, what to reject."""

    rows: list[tuple[Event, dict[str, Any]]] = field(default_factory=list)
    deletes: list[tuple[Event, dict[str, Any]]] = field(default_factory=list)
    rejected: list[tuple[Event, str]] = field(default_factory=list)
    dropped: list[Event] = field(default_factory=list)
    batch_ends: dict[str, int] = field(default_factory=dict)
    batch_modes: dict[str, str] = field(default_factory=dict)
    staged_deletes: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset) of batched merge deletes


# Rows sort by where their event came from: (source partition, source offset), positions 4 and 5 of a row tuple.
_SOURCE_ORDER = operator.itemgetter(4, 5)


@lru_cache(maxsize=8192)
def _parse_temporal(value: Any, column_type: ColumnType) -> Any:
    # Event times repeat a lot within a batch (same second, same day): parse each distinct text once.
    return convert(value, column_type)


def _converter(column_type: ColumnType) -> Callable[[Any], Any]:
    """convert() for one column type, with the common cases done inline (this runs for every value written)."""
    if column_type in (ColumnType.DATE, ColumnType.DATETIME):
        return lambda v: (
            None if v is None else _parse_temporal(v, column_type) if isinstance(v, str) else convert(v, column_type)
        )
    if column_type is ColumnType.STRING:
        return lambda v: v if v is None or type(v) is str else convert(v, column_type)
    if column_type is ColumnType.INTEGER:
        return lambda v: v if v is None or type(v) is int else convert(v, column_type)
    if column_type is ColumnType.FLOAT:
        return lambda v: v if v is None or type(v) is float else convert(v, column_type)
    return lambda v: convert(v, column_type)


def pk_index_name(storage: Storage) -> str:
    return f"hr_pk_{storage.id.hex}"


def staging_table_name(storage: Storage, batch_id: str) -> str:
    return f"{storage.id.hex}_{hashlib.sha1(batch_id.encode()).hexdigest()[:16]}"


class StorageWriter:
    """Turns events into rows of one storage, widening its model first when the data asks for it."""

    def __init__(self, catalog: Catalog, positions: Positions) -> None:
        self.catalog = catalog
        self.positions = positions
        self._models: dict[uuid.UUID, Model] = {}
        self._etl: dict[str, EtlConfig] = {}
        self._pk_indexed: set[uuid.UUID] = set()

    async def _current(
        self, conn: asyncpg.Connection, storage_id: uuid.UUID, *, for_update: bool
    ) -> tuple[Storage, Model, EtlConfig, datetime]:
        lock = "FOR UPDATE" if for_update else "FOR SHARE"
        row = await conn.fetchrow(
            "SELECT id, name, table_name, primary_key, load_mode, locked, model_version, etl, now() AS now"
            f" FROM headrace.storages WHERE id = $1 {lock}",
            storage_id,
        )
        storage = Storage.from_row(row)
        model = self._models.get(storage_id)
        if model is None or model.version != storage.model_version:
            model = await self.catalog.model(storage_id, conn)
            self._models[storage_id] = model
            # asyncpg caches each COPY's column types per statement; after a type change they are stale.
            await conn.reload_schema_state()
        return storage, model, self._etl_config(row["etl"]), row["now"]

    def _etl_config(self, data: dict[str, Any] | None) -> EtlConfig:
        key = repr(sorted((data or {}).items()))
        config = self._etl.get(key)
        if config is None:
            config = self._etl[key] = EtlConfig.from_json(data)
        return config

    def _prepare(self, storage: Storage, etl: EtlConfig, events: list[Event]) -> _Prepared:
        prepared = _Prepared()
        for event in events:
            mode = event.load_mode or storage.load_mode
            if event.batch_id is not None:
                prepared.batch_modes.setdefault(event.batch_id, mode)
            if event.batch_rows is not None:
                prepared.batch_ends[event.batch_id or ""] = event.batch_rows
                continue
            if storage.load_mode == "replace" and event.batch_id is None:
                prepared.rejected.append((event, "replace storage: the event has no hr-batch-id header"))
                continue
            if mode == "merge" and not storage.primary_key:
                prepared.rejected.append((event, "merge batch on a storage without a primary key"))
                continue
            assert event.record is not None
            try:
                record = etl.apply(event.record, keep_all=event.delete)
            except Dropped:
                prepared.dropped.append(event)
                continue
            except EvaluationError as exc:
                prepared.rejected.append((event, f"ETL: {exc}"))
                continue
            if mode == "merge":
                missing = [k for k in storage.primary_key if record.get(k) is None]
                if missing:
                    prepared.rejected.append((event, f"merge: primary key field {missing[0]!r} is missing or null"))
                    continue
                if event.delete:
                    key = {k: record[k] for k in storage.primary_key}
                    if event.batch_id is None:
                        prepared.deletes.append((event, key))
                        continue
                    prepared.staged_deletes.add((event.partition, event.offset))
                    record = key
            prepared.rows.append((event, record))
        return prepared

    async def _evolve(self, storage_id: uuid.UUID, records: list[dict[str, Any]]) -> bool:
        """Apply the model change these records need, in its own short transaction under the storage's lock."""
        async with self.catalog.pool.acquire() as conn, conn.transaction():
            storage, model, _, _ = await self._current(conn, storage_id, for_update=True)
            change, _ = model.plan(records, locked=storage.locked)
            if not change:
                return False
            self._models[storage_id] = await self.catalog.evolve(conn, storage, model, change)
            # The statements this pool cached for the table now describe the old column types.
            await conn.reload_schema_state()
            log.info("model changed", extra={"storage": storage.name, "change": change.to_json()})
            return True

    async def _create_pk_index(self, storage_id: uuid.UUID) -> None:
        """The unique index merge upserts need, once the primary-key columns exist; under the storage's lock."""
        async with self.catalog.pool.acquire() as conn, conn.transaction():
            storage, model, _, _ = await self._current(conn, storage_id, for_update=True)
            columns = ", ".join(quote_ident(model.by_key[k].name) for k in storage.primary_key)
            await conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_ident(pk_index_name(storage))}"
                f" ON {storage.qualified_table} ({columns})"
            )
            log.info("created the primary-key index", extra={"storage": storage.name})

    async def write(
        self,
        storage_id: uuid.UUID,
        topic: str,
        events: list[Event],
        next_offsets: dict[int, int],
        first_offsets: dict[int, int],
    ) -> WriteResult:
        """Write the events and advance the topic's positions atomically; raises Fenced if another worker moved them."""
        result = WriteResult()
        prepared: _Prepared | None = None
        prepared_for: tuple[str, EtlConfig] | None = None
        while True:
            async with self.catalog.pool.acquire() as conn, conn.transaction():
                storage, model, etl, now = await self._current(conn, storage_id, for_update=False)
                if prepared is None or prepared_for != (storage.load_mode, etl):
                    prepared, prepared_for = self._prepare(storage, etl, events), (storage.load_mode, etl)
                records = [record for _, record in prepared.rows]
                change, misfits = model.plan(records, locked=storage.locked)
                needs_index = (
                    not change
                    and storage.load_mode == "merge"
                    and storage.id not in self._pk_indexed
                    and all(k in model.by_key for k in storage.primary_key)
                )
                if needs_index:
                    if await conn.fetchval("SELECT to_regclass($1)", f"storage.{pk_index_name(storage)}"):
                        self._pk_indexed.add(storage.id)
                        needs_index = False
                if not change and not needs_index:
                    await self.positions.advance(conn, topic, next_offsets, first_offsets)
                    result.load_mode = storage.load_mode
                    result.dropped = len(prepared.dropped)
                    rejected = prepared.rejected + [(prepared.rows[i][0], m.reason) for i, m in misfits.items()]
                    accepted = [row for i, row in enumerate(prepared.rows) if i not in misfits]
                    if rejected:
                        await self._reject(conn, storage, rejected)
                    result.rejected = len(rejected)
                    batched = [row for row in accepted if row[0].batch_id is not None]
                    single = [row for row in accepted if row[0].batch_id is None]
                    if storage.load_mode == "append":
                        await self._append(conn, storage, model, single, now, result)
                    elif storage.load_mode == "merge":
                        await self._merge(conn, storage, model, single, prepared.deletes, now, result)
                    if batched or prepared.batch_ends or any(e.batch_id for e, _ in rejected) or prepared.dropped:
                        await self._stage(conn, storage, model, batched, prepared, rejected, now, result)
            if not change and not needs_index:
                self.positions.committed_now(topic, next_offsets)
                return result
            if change:
                # The model must change first; that takes the exclusive lock, so it happens outside the write.
                result.model_changed |= await self._evolve(storage_id, records)
            else:
                await self._create_pk_index(storage_id)
                self._pk_indexed.add(storage_id)

    async def _reject(self, conn: asyncpg.Connection, storage: Storage, rejected: list[tuple[Event, str]]) -> None:
        await conn.executemany(
            "INSERT INTO headrace.rejected_rows (storage_id, event_id, payload, reason, source)"
            " VALUES ($1, $2, $3, $4, 'transform')",
            [(storage.id, event.event_id, event.record or {}, reason) for event, reason in rejected],
        )

    @staticmethod
    def _tuples(model: Model, rows: list[tuple[Event, dict[str, Any]]], now: datetime) -> list[tuple[Any, ...]]:
        known = model.by_key.keys()
        converters = [(c.key, _converter(c.type)) for c in model.columns]
        out = []
        for event, record in rows:
            # Set difference runs in C; fields without a column are rare, so most rows skip the dict entirely.
            extra = record.keys() - known
            overflow = {k: record[k] for k in extra} if extra else None
            get = record.get
            out.append(
                (
                    event.event_id,
                    event.received_at or now,
                    now,
                    overflow,
                    event.partition,
                    event.offset,
                    *[to(get(key)) for key, to in converters],
                )
            )
        return out

    @staticmethod
    def _published(model: Model, tuples: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """The rows-topic form of written rows (see headrace.rows): fields by their keys, then system fields."""
        keys = [c.key for c in model.columns]
        keys += ["_event_id", "_received_at", "_inserted_at", "_source_partition", "_source_offset"]
        out = []
        for row in sorted(tuples, key=_SOURCE_ORDER):
            item = dict(zip(keys, (*row[6:], row[0], row[1], row[2], row[4], row[5]), strict=True))
            if row[3]:
                for key, value in row[3].items():
                    item.setdefault(key, value)
            out.append(item)
        return out

    async def _append(
        self,
        conn: asyncpg.Connection,
        storage: Storage,
        model: Model,
        rows: list[tuple[Event, dict[str, Any]]],
        now: datetime,
        result: WriteResult,
    ) -> None:
        if not rows:
            return
        tuples = self._tuples(model, rows, now)
        await conn.copy_records_to_table(
            storage.table_name,
            schema_name="storage",
            columns=[*SYSTEM_COLUMNS, *(c.name for c in model.columns)],
            records=tuples,
        )
        result.rows = len(tuples)
        result.published = self._published(model, tuples)

    async def _merge(
        self,
        conn: asyncpg.Connection,
        storage: Storage,
        model: Model,
        rows: list[tuple[Event, dict[str, Any]]],
        deletes: list[tuple[Event, dict[str, Any]]],
        now: datetime,
        result: WriteResult,
    ) -> None:
        if not all(k in model.by_key for k in storage.primary_key):
            return  # no row has ever carried the key, so there is nothing to upsert or delete
        pk_columns = [model.by_key[k] for k in storage.primary_key]
        # The last event of each key wins, in partition then offset order (one key's events share a partition).
        last: dict[tuple[Any, ...], tuple[bool, Event, dict[str, Any]]] = {}
        ordered = sorted(
            [(False, e, r) for e, r in rows] + [(True, e, r) for e, r in deletes],
            key=lambda item: (item[1].partition, item[1].offset),
        )
        for is_delete, event, record in ordered:
            key = tuple(convert(record[c.key], c.type) for c in pk_columns)
            last[key] = (is_delete, event, record)
        upserts = [(e, r) for is_delete, e, r in last.values() if not is_delete]
        removed = [key for key, (is_delete, _, _) in last.items() if is_delete]
        table = storage.qualified_table
        if removed:
            arrays = [[key[i] for key in removed] for i in range(len(pk_columns))]
            unnest = ", ".join(f"${i + 1}::{c.type.postgres}[]" for i, c in enumerate(pk_columns))
            names = ", ".join(f"k{i}" for i in range(len(pk_columns)))
            match = " AND ".join(f"t.{quote_ident(c.name)} = d.k{i}" for i, c in enumerate(pk_columns))
            status = await conn.execute(
                f"DELETE FROM {table} t USING unnest({unnest}) AS d({names}) WHERE {match}", *arrays
            )
            result.deleted = int(status.split()[-1])
        if not upserts:
            return
        tuples = self._tuples(model, upserts, now)
        columns = [*SYSTEM_COLUMNS, *(c.name for c in model.columns)]
        await conn.execute(f"CREATE TEMP TABLE hr_merge (LIKE {table}) ON COMMIT DROP")
        await conn.copy_records_to_table("hr_merge", columns=columns, records=tuples)
        quoted = ", ".join(quote_ident(c) for c in columns)
        pk_names = {c.name for c in pk_columns}
        updates = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c not in pk_names)
        conflict = ", ".join(quote_ident(c.name) for c in pk_columns)
        await conn.execute(
            f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM hr_merge"
            f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
        result.rows = len(tuples)
        result.published = self._published(model, tuples)

    async def _stage(
        self,
        conn: asyncpg.Connection,
        storage: Storage,
        model: Model,
        rows: list[tuple[Event, dict[str, Any]]],
        prepared: _Prepared,
        rejected: list[tuple[Event, str]],
        now: datetime,
        result: WriteResult,
    ) -> None:
        """Stage replace-batch rows; swap each batch whose end marker's count is reached into the storage."""
        by_batch: dict[str, list[tuple[Event, dict[str, Any]]]] = {}
        seen: dict[str, list[str]] = {}  # event ids of the batch's events that are not staged (rejected, filtered)
        for event, record in rows:
            by_batch.setdefault(event.batch_id or "", []).append((event, record))
        for event in [e for e, _ in rejected] + prepared.dropped:
            if event.batch_id is not None:
                seen.setdefault(event.batch_id, []).append(event.event_id)
        batch_ids = sorted(set(by_batch) | set(seen) | set(prepared.batch_ends))  # one lock order for every worker
        for batch_id in batch_ids:
            staging = staging_table_name(storage, batch_id)
            qualified = f"{quote_ident(STAGING_SCHEMA)}.{quote_ident(staging)}"
            await conn.execute(
                "INSERT INTO headrace.batches (storage_id, batch_id, staging_table, load_mode) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                storage.id,
                batch_id,
                staging,
                prepared.batch_modes.get(batch_id, storage.load_mode),
            )
            batch = await conn.fetchrow(
                "SELECT state, load_mode FROM headrace.batches WHERE storage_id = $1 AND batch_id = $2 FOR UPDATE",
                storage.id,
                batch_id,
            )
            state, batch_mode = batch["state"], batch["load_mode"]
            batch_rows = by_batch.get(batch_id, [])
            if state in ("swapped", "published"):
                # The same batch again (a collector re-sending after a crash, a replay): applied once already.
                result.dropped += len(batch_rows)
                continue
            if state != "open":
                late = [(e, f"batch {batch_id!r} is {state}") for e, _ in batch_rows]
                if late:
                    await self._reject(conn, storage, late)
                    result.rejected += len(late)
                continue
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified} (LIKE {storage.qualified_table})")
            # A batch counts distinct event ids: a re-sent copy arriving before the first copy's end marker
            # (a collector restarted mid-send) must neither stage rows twice nor overrun the announced count.
            new_ids = {
                r["event_id"]
                for r in await conn.fetch(
                    "INSERT INTO headrace.batch_events (storage_id, batch_id, event_id)"
                    " SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
                    storage.id,
                    batch_id,
                    [e.event_id for e, _ in batch_rows] + seen.get(batch_id, []),
                )
            }
            fresh_seen = sum(1 for event_id in seen.get(batch_id, []) if event_id in new_ids)
            unique_rows = {}
            for event, record in batch_rows:
                if event.event_id in new_ids:
                    unique_rows.setdefault(event.event_id, (event, record))
            result.dropped += len(batch_rows) - len(unique_rows)
            batch_rows = list(unique_rows.values())
            if batch_rows:
                await self._sync_staging(conn, qualified, model)
                tuples = self._tuples(model, batch_rows, now)
                if prepared.staged_deletes:
                    # A staged merge delete is marked in _overflow, which the apply step reads and never copies.
                    tuples = [
                        (*t[:3], {"_op": "d"}, *t[4:]) if (t[4], t[5]) in prepared.staged_deletes else t for t in tuples
                    ]
                await conn.copy_records_to_table(
                    staging,
                    schema_name=STAGING_SCHEMA,
                    columns=[*SYSTEM_COLUMNS, *(c.name for c in model.columns)],
                    records=tuples,
                )
            counts = await conn.fetchrow(
                "UPDATE headrace.batches SET rows_seen = rows_seen + $3,"
                " expected_rows = coalesce($4, expected_rows) WHERE storage_id = $1 AND batch_id = $2"
                " RETURNING rows_seen, expected_rows",
                storage.id,
                batch_id,
                len(batch_rows) + fresh_seen,
                prepared.batch_ends.get(batch_id),
            )
            expected, taken = counts["expected_rows"], counts["rows_seen"]
            if expected is None or taken < expected:
                continue
            if taken > expected:
                reason = f"{taken} row events for an end marker announcing {expected}"
                await conn.execute(
                    "UPDATE headrace.batches SET state = 'failed', reason = $3 WHERE storage_id = $1 AND batch_id = $2",
                    storage.id,
                    batch_id,
                    reason,
                )
                log.error("replace batch failed", extra={"storage": storage.name, "batch": batch_id, "reason": reason})
                continue
            await self._sync_staging(conn, qualified, model)
            result.rows += await self._apply_batch(conn, storage, model, qualified, batch_mode, now, result)
            await conn.execute(f"DROP TABLE {qualified}")
            await conn.execute(
                "DELETE FROM headrace.batch_events WHERE storage_id = $1 AND batch_id = $2", storage.id, batch_id
            )
            await conn.execute(
                "UPDATE headrace.batches SET state = 'swapped', swapped_at = $3 WHERE storage_id = $1"
                " AND batch_id = $2",
                storage.id,
                batch_id,
                now,
            )
            result.swapped.append((batch_id, now))

    async def _apply_batch(
        self,
        conn: asyncpg.Connection,
        storage: Storage,
        model: Model,
        staging: str,
        mode: str,
        now: datetime,
        result: WriteResult,
    ) -> int:
        """Move a complete staged batch into the storage by the batch's load mode, in the caller's transaction."""
        table = storage.qualified_table
        columns = [quote_ident(c.name) for c in model.columns]
        targets = ", ".join([*SYSTEM_COLUMNS, *columns])
        # _overflow carries a staged delete's mark, so it is copied only for rows that are not deletes.
        values = (
            "_event_id, _received_at, $1::timestamptz, CASE WHEN _overflow ? '_op' THEN NULL ELSE _overflow END,"
            f" _source_partition, _source_offset{''.join(', ' + c for c in columns)}"
        )
        if mode == "replace":
            await conn.execute(f"DELETE FROM {table}")
            status = await conn.execute(
                f"INSERT INTO {table} ({targets}) SELECT {values} FROM {staging}"
                " ORDER BY _source_partition, _source_offset",
                now,
            )
            return int(status.split()[-1])
        if mode == "append":
            status = await conn.execute(
                f"INSERT INTO {table} ({targets}) SELECT {values} FROM {staging}"
                " ORDER BY _source_partition, _source_offset",
                now,
            )
            return int(status.split()[-1])
        # merge: the last event of each key wins; a key whose last event is a delete is removed.
        keys = [quote_ident(model.by_key[k].name) for k in storage.primary_key]
        key_list = ", ".join(keys)
        last = (
            f"SELECT DISTINCT ON ({key_list}) * FROM {staging}"
            f" ORDER BY {key_list}, _source_partition DESC, _source_offset DESC"
        )
        match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
        status = await conn.execute(f"DELETE FROM {table} t USING ({last}) s WHERE {match}")
        deleted = await conn.fetchval(f"SELECT count(*) FROM ({last}) s WHERE s._overflow ? '_op'")
        result.deleted += int(deleted)
        status = await conn.execute(
            f"INSERT INTO {table} ({targets}) SELECT {values} FROM ({last}) s"
            " WHERE NOT coalesce(s._overflow ? '_op', false) ORDER BY _source_partition, _source_offset",
            now,
        )
        return int(status.split()[-1])

    async def _sync_staging(self, conn: asyncpg.Connection, qualified: str, model: Model) -> None:
        """Bring a staging table's columns up to the model, which may have grown or widened since it was created."""
        found = {
            r["attname"]: r["type"]
            for r in await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                qualified,
            )
        }
        clauses = []
        for column in model.columns:
            name = quote_ident(column.name)
            if column.name not in found:
                clauses.append(f"ADD COLUMN {name} {column.type.postgres}")
                continue
            before = _TYPE_OF_POSTGRES.get(found[column.name])
            if before is not None and before is not column.type:
                expression = widening_expression(name, before, column.type)
                clauses.append(f"ALTER COLUMN {name} TYPE {column.type.postgres} USING {expression}")
        if clauses:
            await conn.execute(f"ALTER TABLE {qualified} {', '.join(clauses)}")
