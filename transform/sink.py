"""The storage sink: consumes every ingest topic and writes batches to Postgres exactly once.

faust runs the worker (lifecycle, signals, web server) but this sink owns its consumer and its
positions: they live in Postgres, committed with the rows, so Kafka's committed offsets are never used.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter, Histogram

from headrace.catalog import Catalog, StorageNotFound
from headrace.events import EVENT_ID_HEADER, REASON_HEADER, SOURCE_HEADER, read_headers, received_at
from headrace.kafka import Topics, consumer, producer
from headrace.positions import Fenced, Positions
from headrace.postgres import create_pool, migrate
from headrace.settings import Settings
from transform.writer import Event, StorageWriter

log = logging.getLogger(__name__)

ROWS_WRITTEN = Counter("headrace_transform_rows_written_total", "Rows written into storages", ["storage", "load_mode"])
ROWS_REJECTED = Counter("headrace_transform_rows_rejected_total", "Rows a locked model refused", ["storage"])
DEAD_LETTERS = Counter("headrace_transform_dead_letters_total", "Events sent to the dead-letter topic", ["reason"])
MODEL_CHANGES = Counter("headrace_transform_model_changes_total", "Model changes applied", ["storage"])
BATCH_ROWS = Histogram(
    "headrace_transform_batch_rows", "Events per write batch", buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000)
)
BATCH_SECONDS = Histogram("headrace_transform_batch_seconds", "Time to write one batch to Postgres")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: StorageSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.sink.positions.forget([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.sink.seek_to_committed(list(assigned))


class StorageSink(mode.Service):
    """Consumes `<prefix>.ingest.*` and hands each topic's batch to the StorageWriter."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.positions = Positions(self.topics.group("transform"))
        self.pool = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.catalog: Catalog | None = None
        self.writer: StorageWriter | None = None
        self._storage_ids: dict[str, uuid.UUID] = {}

    async def on_start(self) -> None:
        self.pool = await create_pool(self.settings)
        await migrate(self.pool)
        self.catalog = Catalog(self.pool, max_columns=self.settings.max_columns)
        self.writer = StorageWriter(self.catalog, self.positions)
        self.producer = producer(self.settings)
        await self.producer.start()
        self.consumer = consumer(
            self.settings,
            group_id=self.positions.group,
            max_poll_records=self.settings.transform_batch_max_rows,
            # New storages' topics must be noticed quickly: pattern subscriptions only see them on refresh.
            metadata_max_age_ms=1000,
        )
        self.consumer.subscribe(pattern=self.topics.ingest_pattern, listener=_Rebalance(self))
        await self.consumer.start()
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    async def seek_to_committed(self, partitions: list[TopicPartition]) -> None:
        assert self.consumer is not None and self.pool is not None
        stored = await self.positions.load(self.pool, [(tp.topic, tp.partition) for tp in partitions])
        for tp in partitions:
            offset = stored[(tp.topic, tp.partition)]
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def _rewind(self, topic: str, partitions: dict[int, list[Any]]) -> None:
        assert self.consumer is not None
        owned = self.consumer.assignment()
        await self.seek_to_committed(
            [TopicPartition(topic, p) for p in partitions if TopicPartition(topic, p) in owned]
        )

    async def _run(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            try:
                batches = await self.consumer.getmany(
                    timeout_ms=self.settings.transform_batch_max_ms,
                    max_records=self.settings.transform_batch_max_rows,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poll failed; retrying")
                await asyncio.sleep(1)
                continue
            by_topic: dict[str, dict[int, list[Any]]] = defaultdict(dict)
            for tp, messages in batches.items():
                if messages:
                    by_topic[tp.topic][tp.partition] = messages
            for topic, partitions in by_topic.items():
                try:
                    await self._write_topic(topic, partitions)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Postgres away, or a bug: nothing was committed, so re-read from the stored positions.
                    log.exception("writing %s failed; retrying from the committed positions", topic)
                    await asyncio.sleep(1)
                    await self._rewind(topic, partitions)

    async def _storage_id(self, topic: str) -> uuid.UUID | None:
        name = self.topics.storage_of_ingest_topic(topic)
        if name not in self._storage_ids:
            assert self.catalog is not None
            try:
                self._storage_ids[name] = (await self.catalog.get(name)).id
            except StorageNotFound:
                return None
        return self._storage_ids[name]

    async def _write_topic(self, topic: str, partitions: dict[int, list[Any]]) -> None:
        assert self.writer is not None and self.consumer is not None
        next_offsets = {p: messages[-1].offset + 1 for p, messages in partitions.items()}
        first_offsets = {p: messages[0].offset for p, messages in partitions.items()}
        storage_id = await self._storage_id(topic)
        events: list[Event] = []
        dead: list[tuple[Any, str]] = []
        for messages in partitions.values():
            for message in messages:
                event, reason = self._decode(message)
                if event is not None:
                    events.append(event)
                else:
                    dead.append((message, reason))
        if storage_id is None:
            dead = [(m, "no storage for this topic") for ms in partitions.values() for m in ms]
            events = []
        if dead:
            await self._dead_letter(dead)
        started = time.perf_counter()
        try:
            if storage_id is None:
                async with self.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
                    await self.positions.advance(conn, topic, next_offsets, first_offsets)
                self.positions.committed_now(topic, next_offsets)
                return
            result = await self.writer.write(storage_id, topic, events, next_offsets, first_offsets=first_offsets)
        except Fenced as exc:
            log.warning("batch dropped: %s", exc)
            await self._rewind(topic, partitions)
            return
        BATCH_SECONDS.observe(time.perf_counter() - started)
        BATCH_ROWS.observe(len(events))
        name = self.topics.storage_of_ingest_topic(topic)
        ROWS_WRITTEN.labels(name, "append").inc(result.rows)
        if result.rejected:
            ROWS_REJECTED.labels(name).inc(result.rejected)
        if result.model_changed:
            MODEL_CHANGES.labels(name).inc()

    def _decode(self, message: Any) -> tuple[Event | None, str]:
        headers = read_headers(message.headers)
        if message.value is None:
            return None, "tombstone on a storage that is not merged"
        try:
            record = orjson.loads(message.value)
        except orjson.JSONDecodeError as exc:
            return None, f"not JSON: {exc}"
        if not isinstance(record, dict):
            return None, f"not a JSON object but {type(record).__name__}"
        event_id = headers.get(EVENT_ID_HEADER) or f"{message.topic}:{message.partition}:{message.offset}"
        return (
            Event(record, event_id, received_at(headers, message.timestamp), message.partition, message.offset),
            "",
        )

    async def _dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        """Keep each undecodable event on the dead-letter topic, acknowledged before the batch commits."""
        assert self.producer is not None
        futures = []
        for message, reason in dead:
            DEAD_LETTERS.labels(reason.split(":")[0]).inc()
            headers = [
                *(message.headers or ()),
                (REASON_HEADER, reason.encode()),
                (SOURCE_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode()),
            ]
            futures.append(
                await self.producer.send(self.topics.dead_letter, value=message.value, key=message.key, headers=headers)
            )
        await asyncio.gather(*futures)
