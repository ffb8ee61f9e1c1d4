"""Writes one topic's events into its storage: the commit protocol of transform, one Postgres transaction per write.

The commit protocol (StorageWriter.write), for a list of events from one storage's ingest partitions:

1. Read the storage (FOR SHARE: a model change waits for us) and plan the events: ETL, load-mode rules, rejects.
2. If the plan needs a model change (a new column, a widened type) or the merge key's unique index, make it in
   its own short transaction under the storage's exclusive lock, and start again at 1.
3. Advance the topic's stored positions, fenced: if another worker already moved them past these events'
   first offsets, nothing is written (Fenced) and the sink re-reads from Postgres' positions.
4. Drop events whose id this storage has already written within the deduplication window (transform.dedupe).
5. Keep rejected events in rejected_rows with their reasons; write single events by the storage's load mode.
6. Stage batch rows and read end markers (transform.batches), then apply complete batches in stream order.
7. Commit: rows, rejects, batch states, event ids and positions become visible together, or not at all.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from headrace.catalog import Catalog, Storage, StorageNotFound
from headrace.etl import EtlConfig
from headrace.models import Model
from headrace.positions import Positions
from headrace.postgres import Connection, quote_ident
from transform.batches import BatchBook, lock_storage_batches
from transform.columnar import Columns
from transform.dedupe import first_sightings
from transform.events import Event
from transform.load_sql import append_columns, append_rows, merge_columns, merge_rows
from transform.planning import Plan, plan_events

log = logging.getLogger(__name__)


@dataclass
class WriteResult:
    load_mode: str = "append"
    rows: int = 0
    deleted: int = 0
    rejected: int = 0
    filtered: int = 0
    duplicates: int = 0
    model_changed: bool = False
    batches_applied: int = 0
    batches_failed: int = 0


def pk_index_name(storage: Storage) -> str:
    return f"hr_pk_{storage.id.hex}"


class StorageWriter:
    """Turns events into rows of one storage, widening its model first when the data asks for it."""

    def __init__(self, catalog: Catalog, positions: Positions, batch_timeout_seconds: float = 600.0) -> None:
        self.catalog = catalog
        self.positions = positions
        self.batch_timeout_seconds = batch_timeout_seconds
        self._models: dict[uuid.UUID, Model] = {}
        self._etl: dict[str, EtlConfig] = {}
        self._pk_indexed: set[uuid.UUID] = set()
        self._fast: set[uuid.UUID] = set()  # storages last seen in append or merge mode without ETL

    async def _current(
        self, conn: Connection, storage_id: uuid.UUID, *, for_update: bool
    ) -> tuple[Storage, Model, EtlConfig, datetime]:
        lock = "FOR UPDATE" if for_update else "FOR SHARE"
        row = await conn.fetchrow(
            "SELECT id, name, table_name, primary_key, load_mode, locked, model_version, etl, now() AS now"
            f" FROM headrace.storages WHERE id = $1 {lock}",
            storage_id,
        )
        if row is None:  # deleted meanwhile (headrace.catalog.deletion): its events go to the dead letters
            raise StorageNotFound(f"storage {storage_id} was deleted")
        storage = Storage.from_row(row)
        model = self._models.get(storage_id)
        if model is None or model.version != storage.model_version:
            model = await self.catalog.model(storage_id, conn)
            self._models[storage_id] = model
            # asyncpg caches each COPY's column types per statement; after a type change they are stale.
            await conn.reload_schema_state()
        etl = self._etl_config(row["etl"])
        if storage.load_mode in ("append", "merge") and etl.is_empty:
            self._fast.add(storage_id)
        else:
            self._fast.discard(storage_id)
        return storage, model, etl, row["now"]

    def _etl_config(self, data: dict[str, Any] | None) -> EtlConfig:
        key = repr(sorted((data or {}).items()))
        config = self._etl.get(key)
        if config is None:
            config = self._etl[key] = EtlConfig.from_json(data)
        return config

    async def write(
        self,
        storage_id: uuid.UUID,
        topic: str,
        events: list[Event],
        next_offsets: dict[int, int],
        first_offsets: dict[int, int],
        forced: dict[int, str] | None = None,
    ) -> WriteResult:
        """Write the events and advance the topic's positions atomically; raises Fenced if another worker moved them.

        `forced` sends events (by index) to rejected rows with the given reason instead of writing them: the
        sink's way to set aside an event Postgres refuses, while batches still count it.
        """
        result = WriteResult()
        while True:
            async with self.catalog.pool.acquire() as conn, conn.transaction():
                storage, model, etl, now = await self._current(conn, storage_id, for_update=False)
                plan = plan_events(storage, model, etl, events, forced)
                change, misfits = model.plan(plan.records, locked=storage.locked)
                needs_index = not change and await self._needs_pk_index(conn, storage, model)
                if not change and not needs_index:
                    await self.positions.advance(conn, topic, next_offsets, first_offsets)
                    await self._write(conn, storage, model, plan, misfits, now, result)
            if not change and not needs_index:
                self.positions.committed_now(topic, next_offsets)
                return result
            if change:
                # The model must change first; that takes the exclusive lock, so it happens outside the write.
                result.model_changed |= await self._evolve(storage_id, plan.records)
            else:
                await self._create_pk_index(storage_id)

    def fast_model(self, storage_id: uuid.UUID) -> Model | None:
        """The model to decode a poll against for write_columns: known, and its storage last seen fit for it."""
        return self._models.get(storage_id) if storage_id in self._fast else None

    async def write_columns(
        self,
        storage_id: uuid.UUID,
        topic: str,
        columns: Columns,
        next_offsets: dict[int, int],
        first_offsets: dict[int, int],
    ) -> WriteResult | None:
        """The commit protocol for a poll decoded column-wise (transform.columnar), which needs no step 2, nor
        rejects, nor batches: an append or merge storage without ETL whose model holds every value as it is.

        None, with nothing written, when the storage changed since the poll was decoded (its model, load mode or
        ETL): the caller writes the poll the row way. Raises Fenced as write() does.
        """
        async with self.catalog.pool.acquire() as conn, conn.transaction():
            storage, model, etl, now = await self._current(conn, storage_id, for_update=False)
            if not self._takes_columns(storage, model, etl, columns):
                return None
            await self.positions.advance(conn, topic, next_offsets, first_offsets)
            fresh = await self._first_columns(conn, storage, columns)
            result = WriteResult(load_mode=storage.load_mode, duplicates=len(columns) - len(fresh))
            if storage.load_mode == "append":
                result.rows = await append_columns(conn, storage, model, fresh, now)
            else:
                result.rows = await merge_columns(conn, storage, model, fresh, now)
        self.positions.committed_now(topic, next_offsets)
        return result

    def _takes_columns(self, storage: Storage, model: Model, etl: EtlConfig, columns: Columns) -> bool:
        """Whether the storage is still as the poll was decoded for: its model, no ETL, append, or merge by the
        same key with its unique index in place (else the row path creates it)."""
        if not etl.is_empty or model.version != columns.model_version:
            return False
        if storage.load_mode == "merge":
            return bool(storage.primary_key) and columns.key == storage.primary_key and storage.id in self._pk_indexed
        return storage.load_mode == "append" and not columns.key

    async def _first_columns(self, conn: Connection, storage: Storage, columns: Columns) -> Columns:
        """Step 4 column-wise: the events whose id this storage has not written within the window."""
        named = [i for i, flag in enumerate(columns.identified) if flag]
        if not named:
            return columns
        firsts = await first_sightings(conn, storage.id, [columns.event_ids[i] for i in named])
        if all(firsts):
            return columns
        mask = [True] * len(columns)
        for index, first in zip(named, firsts, strict=True):
            mask[index] = first
        return columns.keep(mask)

    async def _write(
        self,
        conn: Connection,
        storage: Storage,
        model: Model,
        plan: Plan,
        misfits: dict[int, Any],
        now: datetime,
        result: WriteResult,
    ) -> None:
        """Steps 4 to 6 of the commit protocol, inside the caller's transaction."""
        result.load_mode = storage.load_mode
        result.filtered = len(plan.dropped)
        rejected = plan.rejected + [(plan.rows[i][0], m.reason) for i, m in misfits.items()]
        accepted = [row for i, row in enumerate(plan.rows) if i not in misfits]
        single = [row for row in accepted if row[0].batch_id is None]
        single, deletes = await self._first_copies(conn, storage, single, plan.deletes, result)
        if rejected:
            await self._reject(conn, storage, rejected)
        result.rejected = len(rejected)
        if storage.load_mode == "append":
            result.rows += await append_rows(conn, storage, model, single, now)
        elif storage.load_mode == "merge":
            rows, deleted = await merge_rows(conn, storage, model, single, deletes, now)
            result.rows += rows
            result.deleted += deleted
        batch_rows = [row for row in accepted if row[0].batch_id is not None]
        book = BatchBook(conn, storage, model, now)
        await book.take(
            batch_rows, plan, rejected, lambda late: self._reject(conn, storage, late), self.batch_timeout_seconds
        )
        outcome = book.outcome
        result.rows += outcome.rows
        result.deleted += outcome.deleted
        result.rejected += outcome.rejected
        result.duplicates += outcome.duplicates
        result.batches_applied += len(outcome.applied)
        result.batches_failed += len(outcome.failed)

    async def _first_copies(
        self,
        conn: Connection,
        storage: Storage,
        rows: list[tuple[Event, dict[str, Any]]],
        deletes: list[tuple[Event, dict[str, Any]]],
        result: WriteResult,
    ) -> tuple[list[tuple[Event, dict[str, Any]]], list[tuple[Event, dict[str, Any]]]]:
        """The rows and deletes whose id this storage has not written within the window (named events only)."""
        named = [item for item in rows + deletes if item[0].identified]
        if not named:
            return rows, deletes
        firsts = await first_sightings(conn, storage.id, [event.event_id for event, _ in named])
        repeated = {id(item) for item, first in zip(named, firsts, strict=True) if not first}
        if not repeated:
            return rows, deletes
        result.duplicates += len(repeated)
        return [r for r in rows if id(r) not in repeated], [d for d in deletes if id(d) not in repeated]

    async def sweep_batches(self, storage_id: uuid.UUID) -> WriteResult:
        """Apply batches that became ready without a new event (an earlier batch timed out); fail overdue ones."""
        result = WriteResult()
        async with self.catalog.pool.acquire() as conn, conn.transaction():
            storage, model, _, now = await self._current(conn, storage_id, for_update=False)
            await lock_storage_batches(conn, storage)
            book = BatchBook(conn, storage, model, now)
            await book.apply_ready(self.batch_timeout_seconds)
        result.load_mode = storage.load_mode
        result.rows, result.deleted = book.outcome.rows, book.outcome.deleted
        result.batches_applied, result.batches_failed = len(book.outcome.applied), len(book.outcome.failed)
        return result

    async def _reject(self, conn: Connection, storage: Storage, rejected: list[tuple[Event, str]]) -> None:
        await conn.executemany(
            "INSERT INTO headrace.rejected_rows (storage_id, event_id, payload, reason, source)"
            " VALUES ($1, $2, $3, $4, 'transform')",
            [(storage.id, event.event_id, event.record or {}, reason) for event, reason in rejected],
        )

    async def _needs_pk_index(self, conn: Connection, storage: Storage, model: Model) -> bool:
        """Whether a merge storage's key columns exist but their unique index does not yet."""
        if storage.load_mode != "merge" or storage.id in self._pk_indexed:
            return False
        if not all(k in model.by_key for k in storage.primary_key):
            return False
        if await conn.fetchval("SELECT to_regclass($1)", f"storage.{pk_index_name(storage)}"):
            self._pk_indexed.add(storage.id)
            return False
        return True

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
        self._pk_indexed.add(storage_id)
