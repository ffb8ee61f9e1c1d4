"""Writes one topic's batch of events into its storage: model changes, rows and positions in one transaction."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.models import Model
from headrace.models.inference import convert
from headrace.positions import Positions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One decoded record with where it came from."""

    record: dict[str, Any]
    event_id: str
    received_at: datetime | None
    partition: int
    offset: int


@dataclass
class WriteResult:
    rows: int = 0
    rejected: int = 0
    model_changed: bool = False


class StorageWriter:
    """Turns events into rows of one storage, widening its model first when the data asks for it."""

    def __init__(self, catalog: Catalog, positions: Positions) -> None:
        self.catalog = catalog
        self.positions = positions
        self._models: dict[uuid.UUID, Model] = {}

    async def _current(
        self, conn: asyncpg.Connection, storage_id: uuid.UUID, *, for_update: bool
    ) -> tuple[Storage, Model]:
        lock = "FOR UPDATE" if for_update else "FOR SHARE"
        row = await conn.fetchrow(
            "SELECT id, name, table_name, primary_key, load_mode, locked, model_version"
            f" FROM headrace.storages WHERE id = $1 {lock}",
            storage_id,
        )
        storage = Storage.from_row(row)
        model = self._models.get(storage_id)
        if model is None or model.version != storage.model_version:
            model = await self.catalog.model(storage_id, conn)
            # asyncpg caches each COPY's column types per statement; after a type change they are stale.
            await conn.reload_schema_state()
            self._models[storage_id] = model
        return storage, model

    async def _evolve(self, storage_id: uuid.UUID, records: list[dict[str, Any]]) -> bool:
        """Apply the model change these records need, in its own short transaction under the storage's lock."""
        async with self.catalog.pool.acquire() as conn, conn.transaction():
            storage, model = await self._current(conn, storage_id, for_update=True)
            change, _ = model.plan(records, locked=storage.locked)
            if not change:
                return False
            self._models[storage_id] = await self.catalog.evolve(conn, storage, model, change)
            await conn.reload_schema_state()
            log.info("model changed", extra={"storage": storage.name, "change": change.to_json()})
            return True

    async def write(
        self,
        storage_id: uuid.UUID,
        topic: str,
        events: list[Event],
        next_offsets: dict[int, int],
        first_offsets: dict[int, int] | None = None,
    ) -> WriteResult:
        """Write the events and advance the topic's positions atomically; raises Fenced if another worker moved them."""
        result = WriteResult()
        records = [e.record for e in events]
        while True:
            async with self.catalog.pool.acquire() as conn, conn.transaction():
                storage, model = await self._current(conn, storage_id, for_update=False)
                change, misfits = model.plan(records, locked=storage.locked)
                if not change:
                    await self.positions.advance(conn, topic, next_offsets, first_offsets)
                    if misfits:
                        await self._reject(conn, storage, events, misfits)
                    accepted = [e for i, e in enumerate(events) if i not in misfits]
                    await self._insert(conn, storage, model, accepted)
                    result.rows, result.rejected = len(accepted), len(misfits)
            if not change:
                self.positions.committed_now(topic, next_offsets)
                return result
            # The model must change first; that takes the exclusive lock, so it happens outside the write.
            result.model_changed |= await self._evolve(storage_id, records)

    async def _reject(self, conn: asyncpg.Connection, storage: Storage, events: list[Event], misfits: dict) -> None:
        await conn.executemany(
            "INSERT INTO headrace.rejected_rows (storage_id, event_id, payload, reason, source)"
            " VALUES ($1, $2, $3, $4, 'transform')",
            [(storage.id, events[i].event_id, events[i].record, m.reason) for i, m in misfits.items()],
        )

    async def _insert(self, conn: asyncpg.Connection, storage: Storage, model: Model, events: list[Event]) -> None:
        if not events:
            return
        columns = model.columns
        now = datetime.now(UTC)
        rows = []
        for event in events:
            record = event.record
            overflow = {k: v for k, v in record.items() if k not in model.by_key} or None
            rows.append(
                (
                    event.event_id,
                    event.received_at or now,
                    overflow,
                    *(convert(record.get(c.key), c.type) for c in columns),
                )
            )
        await conn.copy_records_to_table(
            storage.table_name,
            schema_name="storage",
            columns=["_event_id", "_received_at", "_overflow", *(c.name for c in columns)],
            records=rows,
        )
