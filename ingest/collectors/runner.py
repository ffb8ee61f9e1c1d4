"""Runs a collector once: plan a batch, record it pending, produce it, then mark it sent and move the cursor."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from headrace.catalog import Catalog, Storage, StorageNotFound
from headrace.catalog.provision import create_storage
from headrace.kafka import Topics, consumer, create_topics
from headrace.progress import Progress
from headrace.settings import Settings
from ingest.collectors.batches import BatchWriter, read_batch_events
from ingest.collectors.definitions import Collector, CollectorDefinition, CollectorStore, collector_lock_key
from ingest.collectors.extractor import Extractor
from ingest.collectors.sources import extractor_for

log = logging.getLogger(__name__)

PAUSE_MARKER = "collector paused before moving its cursor"


class CollectorBusy(RuntimeError):
    """Another process runs this collector right now (it holds the collector's advisory lock)."""


def batch_id_of(collector: Collector, seq: int, batch: dict[str, Any]) -> str:
    """Deterministic: the same collector, sequence number and cursor range always name the same batch."""
    span = f"{batch.get('cursor_from')}..{batch.get('cursor_to')}"
    return str(uuid.uuid5(collector.id, f"{seq}:{collector.definition.extract_mode}:{span}"))


async def ensure_storage(settings: Settings, catalog: Catalog, collector: CollectorDefinition) -> Storage:
    """The target storage, created with the collector's primary key and load mode when it does not exist yet."""
    try:
        return await catalog.get(collector.storage)
    except StorageNotFound:
        await create_storage(settings, catalog, collector.storage, collector.primary_key, collector.load_mode)
        return await catalog.get(collector.storage)


async def create_collector(settings: Settings, catalog: Catalog, definition: CollectorDefinition) -> Collector:
    store = CollectorStore(catalog.pool, settings)
    store.check_hosts(definition)  # before the storage is made: a refused definition leaves nothing behind
    await ensure_storage(settings, catalog, definition)
    return await store.create(definition)


class CollectorRunner:
    """Runs collectors with a producer the caller owns (the ingest service's)."""

    def __init__(self, settings: Settings, catalog: Catalog, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.catalog = catalog
        self.producer = producer
        self.store = CollectorStore(catalog.pool, settings)
        self.topics = Topics(settings.topic_prefix)

    @property
    def pool(self) -> asyncpg.Pool:
        return self.catalog.pool

    async def run(self, name: str, only_if_due: bool = False, progress: Progress | None = None) -> dict[str, Any]:
        """Send a batch a crashed run left pending, then the next batch; one run per collector at a time.

        `progress` counts the rows sent (a run cannot tell how many it will find).
        """
        collector = await self.store.get(name)
        key = collector_lock_key(collector.id)
        async with self.pool.acquire() as lock_conn:
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                raise CollectorBusy(f"collector {name!r} is running elsewhere")
            try:
                collector = await self.store.get(name)
                if only_if_due and (collector.next_run_at is None or collector.next_run_at > datetime.now(UTC)):
                    return {"collector": name, "batches": [], "skipped": "ran elsewhere already"}
                return await self._run(collector, progress or Progress("rows"))
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def _run(self, collector: Collector, progress: Progress) -> dict[str, Any]:
        started = datetime.now(UTC)
        definition = collector.definition
        extractor = extractor_for(definition, self.settings, self.pool)
        sent: list[dict[str, Any]] = []
        error: str | None = None
        try:
            storage = await ensure_storage(self.settings, self.catalog, definition)
            pending = await self.store.pending(collector)
            if pending is not None:
                log.info(
                    "re-sending a pending batch", extra={"collector": collector.name, "batch": pending["batch_id"]}
                )
                sent.append(await self._send(collector, storage, pending, extractor, progress))
                collector = await self.store.get(collector.name)
                extractor = extractor_for(definition, self.settings, self.pool)
            plan = await extractor.plan(collector.cursor)
            if plan is not None:
                seq = collector.batch_seq + 1
                batch = plan | {
                    "seq": seq,
                    "load_mode": definition.load_mode,
                    "extract_mode": definition.extract_mode,
                    "topic": self.topics.ingest(storage.name),
                }
                batch["batch_id"] = batch_id_of(collector, seq, batch)
                await self.store.record_pending(collector, batch)
                sent.append(await self._send(collector, storage, batch, extractor, progress))
        except Exception as exc:
            error = str(exc) or repr(exc)
            raise
        finally:
            await self.store.finished(collector, started, error)
        return {"collector": collector.name, "batches": sent}

    async def _send(
        self, collector: Collector, storage: Storage, batch: dict[str, Any], extractor: Extractor, progress: Progress
    ) -> dict[str, Any]:
        await create_topics(self.settings, self.pool, [batch["topic"]])
        writer = BatchWriter(
            self.producer,
            batch["topic"],
            batch["batch_id"],
            batch["load_mode"],
            storage.primary_key or collector.definition.primary_key,
        )
        try:
            async for records in extractor.extract(batch, self.catalog, storage):
                for record in records:
                    await writer.add(record)
                progress.add(len(records))
            result = await writer.finish()
        except BaseException as exc:
            writer.abandon()
            # The batch stays pending: the next run sends the same batch (same id, same range) again.
            await asyncio.shield(self.store.note_error(collector, batch["batch_id"], str(exc) or repr(exc)))
            raise
        if self.settings.collector_test_pause_seconds > 0:
            print(f"{PAUSE_MARKER}: {batch['batch_id']}", file=sys.stderr, flush=True)
            await asyncio.sleep(self.settings.collector_test_pause_seconds)
        if batch.get("cursor_to") is None and extractor.observed_cursor is not None:
            batch["cursor_to"] = extractor.observed_cursor
        await self.store.mark_sent(collector, batch, result.rows, result.deletes, result.offsets, advance=True)
        log.info(
            "collector batch sent",
            extra={"collector": collector.name, "batch": batch["batch_id"], "rows": result.rows},
        )
        return result.to_json() | {"status": "sent", "seq": batch["seq"]}

    async def replay(self, name: str, batch_id: str, progress: Progress | None = None) -> dict[str, Any]:
        """Load a sent batch again: its events are read back from the ingest topic and sent as a new batch."""
        progress = progress or Progress("rows")
        collector = await self.store.get(name)
        original = await self.store.batch(collector, batch_id)
        if original["status"] != "sent" or not original["offsets"]:
            raise ValueError(f"batch {batch_id} is {original['status']}: only a sent batch with rows can be replayed")
        attempt = await self.store.replays(collector, batch_id) + 1
        replay = {
            "batch_id": str(uuid.uuid5(collector.id, f"replay:{batch_id}:{attempt}")),
            "seq": original["seq"],
            "load_mode": original["load_mode"],
            "extract_mode": original["extract_mode"],
            "cursor_from": original["cursor_from"],
            "cursor_to": original["cursor_to"],
            "replay_of": batch_id,
            "topic": original["topic"],
        }
        storage = await self.catalog.get(collector.definition.storage)
        progress.total = original["rows"]
        await self.store.record_pending(collector, replay)
        writer = BatchWriter(
            self.producer, replay["topic"], replay["batch_id"], replay["load_mode"], storage.primary_key
        )
        reader = consumer(self.settings, group_id=None, enable_auto_commit=False)
        await reader.start()
        try:
            async for events in read_batch_events(reader, original["topic"], batch_id, original["offsets"]):
                for value, key in events:
                    await writer.add_encoded(value, key)
                progress.add(len(events))
            result = await writer.finish()
        except Exception as exc:
            writer.abandon()
            await self.store.mark_failed(collector, replay["batch_id"], str(exc) or repr(exc))
            raise
        finally:
            await reader.stop()
        await self.store.mark_sent(
            collector, replay, result.rows, original["deletes"] or 0, result.offsets, advance=False
        )
        return result.to_json() | {"status": "sent", "replay_of": batch_id}
