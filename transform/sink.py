"""The storage sink: consumes every ingest topic and writes its events to Postgres exactly once.

faust runs the worker (lifecycle, signals, web server) but this sink owns its consumer and its positions.
Exactly-once needs each write's consumer offsets committed in the same Postgres transaction as its rows, and
the embedded broker (Tansu) has no Kafka transactions, so Kafka's committed offsets are never used: on
assignment the sink seeks to the positions stored in Postgres for the topic's current incarnation, and a fenced
update of those positions keeps two workers that briefly share a partition during a rebalance from both writing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import asyncpg
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IllegalStateError

from headrace.catalog import Catalog, Storage, StorageNotFound
from headrace.codecs import EventDecoder
from headrace.events import REASON_HEADER, SOURCE_HEADER
from headrace.heap import freeze_startup_objects
from headrace.kafka import Topics, consumer, ensure_topics, metadata_client, producer
from headrace.kafka.clients import fetcher_stopped, refresh_metadata
from headrace.kafka.incarnation import Incarnations, cluster_id
from headrace.positions import Fenced, Positions
from headrace.postgres import create_pool, migrate
from headrace.settings import Settings
from transform import columnar, metrics
from transform.dedupe import prune
from transform.events import Event, decode_message
from transform.failures import describe
from transform.rebalance import Rebalance
from transform.recovery import Abandoned, TopicWrite
from transform.storage_creations import StorageCreations
from transform.writer import StorageWriter, WriteResult

log = logging.getLogger(__name__)

# How often overdue batches are failed (freeing the batches behind them) and old event ids forgotten.
SWEEP_SECONDS_MAX = 30.0
PRUNE_SECONDS = 600.0
CONSUMER_STOP_SECONDS = 10.0


class StorageSink(mode.Service):
    """Consumes `<prefix>.ingest.*` and hands each topic's events to the StorageWriter."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.positions = Positions(self.topics.group("transform"))
        self.pool: asyncpg.Pool | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.metadata: AIOKafkaClient | None = None
        self.catalog: Catalog | None = None
        self.writer: StorageWriter | None = None
        self.decoder: EventDecoder | None = None
        self._storages: dict[str, Storage] = {}
        self._consumer_ok = False
        self.creations = StorageCreations(settings, self._storage_created)

    async def on_start(self) -> None:
        self.pool = await create_pool(self.settings, application_name="headrace-transform")
        await migrate(self.pool)
        self.catalog = Catalog(self.pool, max_columns=self.settings.max_columns)
        self.writer = StorageWriter(self.catalog, self.positions, self.settings.batch_complete_timeout_seconds)
        self.decoder = EventDecoder(self.pool)
        await ensure_topics(self.settings, [self.topics.dead_letter])
        self.metadata = metadata_client(self.settings)
        await self.metadata.bootstrap()
        self.producer = producer(self.settings)
        await self.producer.start()
        await self._start_consumer()
        await self.creations.start()
        freeze_startup_objects()
        self.add_future(self._run())
        self.add_future(self._maintain())

    async def _start_consumer(self) -> None:
        self._consumer_ok = False
        self.consumer = consumer(
            self.settings,
            group_id=self.positions.group,
            max_poll_records=self.settings.transform_batch_max_rows,
            # New storages' topics must be noticed quickly: pattern subscriptions only see them on refresh (which a
            # storage's creation also asks for: _storage_created).
            metadata_max_age_ms=1000,
        )
        self.consumer.subscribe(pattern=self.topics.ingest_pattern, listener=Rebalance(self))
        await self.consumer.start()
        self._consumer_ok = True

    async def _restart_consumer_if_stalled(self) -> None:
        """A consumer whose fetch routine died fetches nothing again: replace it, so no partition stalls. Positions
        live in Postgres, so the new consumer's assignment seeks to them like any rebalance."""
        assert self.consumer is not None
        reason = fetcher_stopped(self.consumer) if self._consumer_ok else RuntimeError("the last start failed")
        if reason is None:
            return
        self._consumer_ok = False
        metrics.CONSUMER_RESTARTS.inc()
        log.error("the consumer stopped fetching (%s: %s); starting a new one", type(reason).__name__, reason)
        await self._stop_consumer()
        self.positions.forget(list(self.positions.committed))
        self._storages.clear()
        await self._start_consumer()

    async def _stop_consumer(self) -> None:
        """Stop the consumer, waiting CONSUMER_STOP_SECONDS at most: leaving the group politely took aiokafka 48 s to
        minutes with 800 partitions on Tansu. Positions live in Postgres, so a consumer stopped short is a crash the
        protocol already survives (kill -9), whether the worker stops or replaces a stalled consumer."""
        if self.consumer is None:
            return
        try:
            await asyncio.wait_for(self.consumer.stop(), CONSUMER_STOP_SECONDS)
        except TimeoutError:
            log.warning("the consumer did not stop within %g s; going on without it", CONSUMER_STOP_SECONDS)
        except Exception:
            log.exception("stopping the consumer failed; going on without it")

    def _storage_created(self, name: str) -> None:
        if self.consumer is not None and self._consumer_ok:
            refresh_metadata(self.consumer)

    async def on_stop(self) -> None:
        await self.creations.stop()
        await self._stop_consumer()
        if self.producer is not None:
            await self.producer.stop()
        if self.metadata is not None:
            await self.metadata.close()
        if self.pool is not None:
            await self.pool.close()

    async def seek_to_committed(self, partitions: list[TopicPartition]) -> None:
        """Seek to the positions Postgres holds for the topics' current incarnation; void ones read from the start."""
        assert self.consumer is not None and self.pool is not None and self.metadata is not None
        if not partitions:
            return
        topics = sorted({tp.topic for tp in partitions})
        incarnations = await Incarnations(self.pool, await cluster_id(self.metadata)).current(topics)
        stored, void = await self.positions.load(
            self.pool, [(tp.topic, tp.partition) for tp in partitions], incarnations
        )
        for topic, partition in void:
            metrics.TOPIC_RESETS.labels(topic).inc()
            log.warning(
                "stored position belongs to another incarnation of the topic; reading it from its beginning",
                extra={"topic": topic, "partition": partition, "incarnation": incarnations.get(topic)},
            )
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

    async def _rewind(self, topic: str, partitions: dict[int, list[Any]] | list[int]) -> None:
        """Seek the partitions back to Postgres' positions, reloading the topic's incarnation and its storage:
        after a fence, a write that found its storage gone, or a topic deleted and created again, all three
        may have changed."""
        assert self.consumer is not None
        self.forget_storage(topic)
        owned = self.consumer.assignment()
        await self.seek_to_committed(
            [TopicPartition(topic, p) for p in partitions if TopicPartition(topic, p) in owned]
        )

    async def _run(self) -> None:
        while not self.should_stop:
            assert self.consumer is not None
            try:
                await self._restart_consumer_if_stalled()
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
            behind: dict[str, list[int]] = defaultdict(list)
            for tp, messages in batches.items():
                committed = self.positions.committed.get((tp.topic, tp.partition))
                if committed is not None and messages and messages[0].offset < committed:
                    # Offsets below what this worker committed: a rebalance sought back, or the topic was deleted
                    # and created again (its offsets restart at 0). Postgres' positions, on the topic's current
                    # incarnation, tell which; the partition is read again from there.
                    behind[tp.topic].append(tp.partition)
                elif messages:
                    by_topic[tp.topic][tp.partition] = messages
            for topic, stale in behind.items():
                await self._rewind(topic, stale)
            for topic, partitions in by_topic.items():
                try:
                    await self._write_topic(topic, partitions)
                except asyncio.CancelledError:
                    raise
                except (Fenced, Abandoned, StorageNotFound) as exc:
                    log.warning("write dropped (%s); re-reading from the committed positions", exc)
                    await self._rewind(topic, partitions)
                except Exception:
                    # A bug: nothing of the failing transaction was committed, so re-read from the stored positions.
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
                storage = self.topics.storage_of_ingest_topic(tp.topic)
                lag = max(highwater - (position or 0), 0)
                metrics.CONSUMER_LAG.labels(storage, tp.topic, str(tp.partition)).set(lag)

    async def _storage(self, topic: str) -> Storage | None:
        name = self.topics.storage_of_ingest_topic(topic)
        if name not in self._storages:
            assert self.catalog is not None
            try:
                self._storages[name] = await self.catalog.get(name)
            except StorageNotFound:
                return None
        return self._storages[name]

    def forget_storage(self, topic: str) -> None:
        self._storages.pop(self.topics.storage_of_ingest_topic(topic), None)

    def _owns(self, topic: str, partitions: dict[int, list[Any]]) -> bool:
        assert self.consumer is not None
        owned = self.consumer.assignment()
        return not self.should_stop and all(TopicPartition(topic, p) in owned for p in partitions)

    async def _write_topic(self, topic: str, partitions: dict[int, list[Any]]) -> None:
        assert self.writer is not None and self.decoder is not None
        next_offsets = {p: messages[-1].offset + 1 for p, messages in partitions.items()}
        first_offsets = {p: messages[0].offset for p, messages in partitions.items()}
        storage = await self._storage(topic)
        if storage is not None and await self._write_columns(storage, topic, partitions, next_offsets, first_offsets):
            return
        events: list[Event] = []
        dead: list[tuple[Any, str]] = []
        for messages in partitions.values():
            for message in messages:
                if storage is None:
                    dead.append((message, "no storage for this topic"))
                    continue
                event, reason = await decode_message(storage, message, self.decoder)
                if event is not None:
                    events.append(event)
                else:
                    dead.append((message, reason))
        if dead:
            await self._dead_letter(dead)
        started = time.perf_counter()
        if storage is None:
            assert self.pool is not None
            async with self.pool.acquire() as conn, conn.transaction():
                await self.positions.advance(conn, topic, next_offsets, first_offsets)
            self.positions.committed_now(topic, next_offsets)
            return
        by_position = {(m.partition, m.offset): m for ms in partitions.values() for m in ms}
        write = TopicWrite(
            self.writer,
            storage,
            topic,
            by_position,
            first_offsets,
            self._dead_letter,
            lambda: self._owns(topic, partitions),
        )
        await write.run(events, next_offsets)
        self._account(storage, len(events), write.results, started)

    async def _write_columns(
        self,
        storage: Storage,
        topic: str,
        partitions: dict[int, list[Any]],
        next_offsets: dict[int, int],
        first_offsets: dict[int, int],
    ) -> bool:
        """Write the poll column-wise if it fits the storage's model as it is (transform.columnar); False: it did
        not, nothing was written, and the row path takes the poll."""
        assert self.writer is not None
        model = self.writer.fast_model(storage.id) if self.settings.transform_fast_path else None
        if model is None:
            return False
        started = time.perf_counter()
        key = storage.primary_key if storage.load_mode == "merge" else ()
        columns = columnar.decode(model, [m for messages in partitions.values() for m in messages], key)
        result = None
        if columns is not None:
            try:
                result = await self.writer.write_columns(storage.id, topic, columns, next_offsets, first_offsets)
            except (Fenced, StorageNotFound):
                raise
            except Exception as exc:
                # Postgres away, contended or refusing a value: the row path waits, retries or sets events aside.
                extra = {"topic": topic, "error": describe(exc)}
                log.info("column-wise write failed; taking the row path", extra=extra)
        if columns is None or result is None:
            metrics.FAST_PATH.labels(storage.name, "row_path").inc()
            return False
        metrics.FAST_PATH.labels(storage.name, "written").inc()
        self._account(storage, len(columns), [result], started)
        return True

    def _account(self, storage: Storage, events: int, results: list[WriteResult], started: float) -> None:
        if not results:
            return
        load_mode = results[0].load_mode
        metrics.BATCH_SECONDS.labels(load_mode).observe(time.perf_counter() - started)
        metrics.BATCH_ROWS.labels(load_mode).observe(events)
        name = storage.name
        for result in results:
            metrics.ROWS_WRITTEN.labels(name, result.load_mode).inc(result.rows)
            for counter, amount in (
                (metrics.ROWS_DELETED, result.deleted),
                (metrics.ROWS_REJECTED, result.rejected),
                (metrics.ROWS_FILTERED, result.filtered),
                (metrics.DUPLICATES, result.duplicates),
            ):
                if amount:
                    counter.labels(name).inc(amount)
            if result.batches_applied:
                metrics.BATCHES.labels(name, "applied").inc(result.batches_applied)
            if result.batches_failed:
                metrics.BATCHES.labels(name, "failed").inc(result.batches_failed)
            if result.model_changed:
                metrics.MODEL_CHANGES.labels(name).inc()

    async def _dead_letter(self, dead: list[tuple[Any, str]]) -> None:
        """Keep each event that cannot be written on the dead-letter topic, acknowledged before the write commits."""
        assert self.producer is not None
        futures = []
        for message, reason in dead:
            storage = self.topics.storage_of_ingest_topic(message.topic)
            metrics.DEAD_LETTERS.labels(storage, reason.split(":")[0][:60]).inc()
            headers = [
                *(message.headers or ()),
                (REASON_HEADER, reason.encode()),
                (SOURCE_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode()),
            ]
            futures.append(
                await self.producer.send(self.topics.dead_letter, value=message.value, key=message.key, headers=headers)
            )
        await asyncio.gather(*futures)

    async def _maintain(self) -> None:
        """Fail batches still short long after their end marker (freeing those behind them); forget old event ids."""
        assert self.pool is not None and self.writer is not None
        last_prune = 0.0
        every = min(SWEEP_SECONDS_MAX, self.settings.batch_complete_timeout_seconds / 2)
        while not self.should_stop:
            await self.sleep(every)
            try:
                overdue = await self.pool.fetch(
                    "SELECT DISTINCT storage_id FROM headrace.batches WHERE state = 'open'"
                    " AND marker_read_at < now() - make_interval(secs => $1)",
                    self.settings.batch_complete_timeout_seconds,
                )
                for row in overdue:
                    result = await self.writer.sweep_batches(row["storage_id"])
                    if result.batches_applied or result.batches_failed:
                        log.info(
                            "swept overdue batches",
                            extra={"applied": result.batches_applied, "failed": result.batches_failed},
                        )
                if time.monotonic() - last_prune > PRUNE_SECONDS:
                    last_prune = time.monotonic()
                    metrics.EVENT_IDS_PRUNED.inc(await prune(self.pool, self.settings.dedupe_window_hours))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance failed; trying again later")
