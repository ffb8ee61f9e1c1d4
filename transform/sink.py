"""The storage sink: consumes every ingest topic and writes batches to Postgres exactly once.

faust runs the worker (lifecycle, signals, web server) but this sink owns its consumer and its positions.
Exactly-once needs each batch's consumer offsets committed in the same Postgres transaction as its rows,
and the embedded broker (Tansu) has no Kafka transactions, so Kafka's committed offsets are never used:
on assignment the sink seeks to the positions stored in Postgres, and a fenced update of those positions
keeps two workers that briefly share a partition during a rebalance from both writing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import asyncpg
import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from prometheus_client import Counter, Gauge, Histogram

from headrace.catalog import Catalog, Storage, StorageNotFound
from headrace.catalog.storages import LOAD_MODES
from headrace.codecs import MAGIC_BYTE, EventDecoder, UndecodableEvent, decode_json
from headrace.events import (
    BATCH_ID_HEADER,
    BATCH_ROWS_HEADER,
    DELETE_OP,
    EVENT_ID_HEADER,
    LOAD_MODE_HEADER,
    OP_FIELD,
    REASON_HEADER,
    SOURCE_HEADER,
    read_headers,
    received_at,
)
from headrace.kafka import Topics, consumer, ensure_topics, producer
from headrace.positions import Fenced, Positions
from headrace.postgres import create_pool, migrate
from headrace.settings import Settings
from transform.publisher import RowsPublisher
from transform.writer import Event, StorageWriter, WriteResult

log = logging.getLogger(__name__)

ROWS_WRITTEN = Counter("headrace_transform_rows_written_total", "Rows written into storages", ["storage", "load_mode"])
ROWS_DELETED = Counter("headrace_transform_rows_deleted_total", "Rows merge deletes removed", ["storage"])
ROWS_REJECTED = Counter(
    "headrace_transform_rows_rejected_total", "Rows sent to rejected rows (locked model, ETL, key)", ["storage"]
)
ROWS_FILTERED = Counter(
    "headrace_transform_rows_filtered_total", "Records the storage's ETL filter left out", ["storage"]
)
DEAD_LETTERS = Counter("headrace_transform_dead_letters_total", "Events sent to the dead-letter topic", ["reason"])
MODEL_CHANGES = Counter("headrace_transform_model_changes_total", "Model changes applied", ["storage"])
BATCH_ROWS = Histogram(
    "headrace_transform_batch_rows",
    "Events per write batch",
    ["load_mode"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
BATCH_SECONDS = Histogram(
    "headrace_transform_batch_seconds",
    "Time to write one batch to Postgres (commit included, publication excluded)",
    ["load_mode"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "headrace_transform_consumer_lag",
    "Events in a partition not yet written (highwater - position)",
    ["topic", "partition"],
)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: StorageSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.sink.positions.forget([(tp.topic, tp.partition) for tp in revoked])
        for tp in revoked:
            try:
                CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.sink.take_over(list(assigned))


def _key_record(key: bytes | None, primary_key: tuple[str, ...]) -> dict[str, Any] | None:
    """The primary key a tombstone's Kafka key names: a JSON object, a JSON array in key order, or one value."""
    if key is None or not primary_key:
        return None
    try:
        decoded = orjson.loads(key)
    except orjson.JSONDecodeError:
        decoded = key.decode(errors="replace")
    if isinstance(decoded, dict):
        return decoded
    if isinstance(decoded, list):
        return dict(zip(primary_key, decoded, strict=False)) if len(decoded) == len(primary_key) else None
    return {primary_key[0]: decoded} if len(primary_key) == 1 else None


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
        self.publisher: RowsPublisher | None = None
        self.decoder: EventDecoder | None = None
        self._storages: dict[str, Storage] = {}

    async def on_start(self) -> None:
        self.pool = await create_pool(self.settings)
        await migrate(self.pool)
        self.catalog = Catalog(self.pool, max_columns=self.settings.max_columns)
        self.writer = StorageWriter(self.catalog, self.positions)
        self.decoder = EventDecoder(self.pool)
        await ensure_topics(self.settings, [self.topics.dead_letter])
        self.producer = producer(self.settings)
        await self.producer.start()
        self.publisher = RowsPublisher(self.settings, self.producer, self.pool, self.catalog)
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

    async def seek_to_committed(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int | None]:
        assert self.consumer is not None and self.pool is not None
        stored = await self.positions.load(self.pool, [(tp.topic, tp.partition) for tp in partitions])
        for tp in partitions:
            # Loading the positions awaited Postgres; a rebalance in the meantime may have taken the partition.
            if tp not in self.consumer.assignment():
                continue
            offset = stored[(tp.topic, tp.partition)]
            try:
                if offset is None:
                    await self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, offset)
            except IllegalStateError:
                log.info("%s was reassigned while seeking; its new owner seeks it", tp)
        return stored

    async def take_over(self, partitions: list[TopicPartition]) -> None:
        """On assignment: seek to the stored positions and republish rows committed but never published."""
        stored = await self.seek_to_committed(partitions)
        by_topic: dict[str, dict[int, int | None]] = defaultdict(dict)
        for (topic, partition), offset in stored.items():
            by_topic[topic][partition] = offset
        assert self.publisher is not None
        for topic, committed in by_topic.items():
            storage = await self._storage(topic)
            if storage is not None:
                await self.publisher.repair(storage, topic, committed)

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
                # A rebalance may have sought back to positions this worker has committed since: skip those.
                committed = self.positions.committed.get((tp.topic, tp.partition))
                if committed is not None and messages and messages[0].offset < committed:
                    messages = [m for m in messages if m.offset >= committed]
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
            self._update_lag()

    def _update_lag(self) -> None:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            position = self.positions.committed.get((tp.topic, tp.partition))
            if highwater is not None:
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - (position or 0), 0))

    async def _storage(self, topic: str) -> Storage | None:
        name = self.topics.storage_of_ingest_topic(topic)
        if name not in self._storages:
            assert self.catalog is not None
            try:
                self._storages[name] = await self.catalog.get(name)
            except StorageNotFound:
                return None
        return self._storages[name]

    async def _write_topic(self, topic: str, partitions: dict[int, list[Any]]) -> None:
        assert self.writer is not None and self.consumer is not None and self.publisher is not None
        next_offsets = {p: messages[-1].offset + 1 for p, messages in partitions.items()}
        first_offsets = {p: messages[0].offset for p, messages in partitions.items()}
        storage = await self._storage(topic)
        events: list[Event] = []
        dead: list[tuple[Any, str]] = []
        if storage is None:
            dead = [(m, "no storage for this topic") for ms in partitions.values() for m in ms]
        else:
            for messages in partitions.values():
                for message in messages:
                    event, reason = await self._decode(storage, message)
                    if event is not None:
                        events.append(event)
                    else:
                        dead.append((message, reason))
        if dead:
            await self._dead_letter(dead)
        started = time.perf_counter()
        try:
            if storage is None:
                async with self.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
                    await self.positions.advance(conn, topic, next_offsets, first_offsets)
                self.positions.committed_now(topic, next_offsets)
                return
            try:
                result = await self.writer.write(storage.id, topic, events, next_offsets, first_offsets)
            except asyncpg.DataError as exc:
                # Some value Postgres refuses (it says which only for the whole COPY): find it, keep the rest.
                log.warning("batch of %s refused by Postgres (%s); writing its events one by one", topic, exc)
                await self._write_one_by_one(storage, topic, partitions, events, next_offsets, first_offsets)
                return
        except Fenced as exc:
            log.warning("batch dropped: %s", exc)
            await self._rewind(topic, partitions)
            return
        await self._account_and_publish(storage, topic, events, result, next_offsets, started)

    async def _write_one_by_one(
        self,
        storage: Storage,
        topic: str,
        partitions: dict[int, list[Any]],
        events: list[Event],
        next_offsets: dict[int, int],
        first_offsets: dict[int, int],
    ) -> None:
        """The slow path for a poison batch: each event alone; those Postgres refuses go to the dead letters."""
        assert self.writer is not None
        messages = {(m.partition, m.offset): m for ms in partitions.values() for m in ms}
        starts = dict(first_offsets)
        for event in events:
            span = {event.partition: event.offset + 1}
            first = {event.partition: starts[event.partition]}
            started = time.perf_counter()
            try:
                result = await self.writer.write(storage.id, topic, [event], span, first)
            except asyncpg.DataError as exc:
                await self._dead_letter([(messages[(event.partition, event.offset)], f"refused by Postgres: {exc}")])
                result = await self.writer.write(storage.id, topic, [], span, first)
            starts[event.partition] = event.offset + 1
            await self._account_and_publish(storage, topic, [event], result, span, started)
        # Dead-lettered messages after the last event still move the positions to the batch's end.
        tail = {p: n for p, n in next_offsets.items() if starts.get(p, n) < n}
        if tail:
            result = await self.writer.write(storage.id, topic, [], tail, {p: starts[p] for p in tail})

    async def _account_and_publish(
        self,
        storage: Storage,
        topic: str,
        events: list[Event],
        result: WriteResult,
        next_offsets: dict[int, int],
        started: float,
    ) -> None:
        assert self.consumer is not None and self.publisher is not None
        BATCH_SECONDS.labels(result.load_mode).observe(time.perf_counter() - started)
        BATCH_ROWS.labels(result.load_mode).observe(len(events))
        ROWS_WRITTEN.labels(storage.name, result.load_mode).inc(result.rows)
        if result.deleted:
            ROWS_DELETED.labels(storage.name).inc(result.deleted)
        if result.rejected:
            ROWS_REJECTED.labels(storage.name).inc(result.rejected)
        if result.dropped:
            ROWS_FILTERED.labels(storage.name).inc(result.dropped)
        if result.model_changed:
            MODEL_CHANGES.labels(storage.name).inc()
        # Rows go out only now that they are committed; a crash before the mark is repaired on reassignment.
        await self.publisher.ensure_rows_topic(storage.name, len(self.consumer.partitions_for_topic(topic) or ()) or 1)
        await self.publisher.publish(topic, storage.name, result.published, next_offsets)
        for batch_id, swapped_at in result.swapped:
            await self.publisher.publish_swapped(storage, batch_id, swapped_at)

    async def _decode(self, storage: Storage, message: Any) -> tuple[Event | None, str]:
        headers = read_headers(message.headers)
        event_id = headers.get(EVENT_ID_HEADER) or f"{message.topic}:{message.partition}:{message.offset}"
        arrived = received_at(headers, message.timestamp)
        batch_id = headers.get(BATCH_ID_HEADER)
        load_mode = headers.get(LOAD_MODE_HEADER)
        if load_mode is not None and (load_mode not in LOAD_MODES or batch_id is None):
            return None, f"bad {LOAD_MODE_HEADER} {load_mode!r}: one of {', '.join(LOAD_MODES)}, on a batch's events"
        if BATCH_ROWS_HEADER in headers:
            try:
                rows = int(headers[BATCH_ROWS_HEADER])
            except ValueError:
                return None, f"bad {BATCH_ROWS_HEADER}: {headers[BATCH_ROWS_HEADER]!r}"
            if batch_id is None or rows < 0:
                return None, f"batch end marker without {BATCH_ID_HEADER} or with a negative count"
            return Event(
                None,
                event_id,
                arrived,
                message.partition,
                message.offset,
                batch_id=batch_id,
                batch_rows=rows,
                load_mode=load_mode,
            ), ""
        mode = load_mode or storage.load_mode
        if message.value is None:
            if mode != "merge":
                return None, "tombstone on a storage that is not merged"
            key = _key_record(message.key, storage.primary_key)
            if key is None:
                return None, "tombstone without a key naming the primary key"
            return Event(
                key,
                event_id,
                arrived,
                message.partition,
                message.offset,
                delete=True,
                batch_id=batch_id,
                load_mode=load_mode,
            ), ""
        try:
            if message.value[:1] == bytes([MAGIC_BYTE]):
                assert self.decoder is not None
                record = await self.decoder.decode(message.value)
            else:
                record = decode_json(message.value)
        except UndecodableEvent as exc:
            return None, exc.reason
        delete = False
        if mode == "merge" and OP_FIELD in record:
            delete = record.pop(OP_FIELD) == DELETE_OP
        return Event(
            record,
            event_id,
            arrived,
            message.partition,
            message.offset,
            delete=delete,
            batch_id=batch_id,
            load_mode=load_mode,
        ), ""

    async def _dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        """Keep each event that cannot be written on the dead-letter topic, acknowledged before the batch commits."""
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
