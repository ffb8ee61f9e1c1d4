"""Sends one batch to a storage's ingest topic: row events with batch headers, an end marker, every ack awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from headrace.events import (
    BATCH_ID_HEADER,
    BATCH_ROWS_HEADER,
    DELETE_OP,
    OP_FIELD,
    batch_end_headers,
    batch_headers,
    event_headers,
    event_key,
    read_headers,
)

# The partition every batch end marker goes to (see BatchWriter.finish).
MARKER_PARTITION = 0
# Acks are awaited every this many events, so a batch of any size holds a bounded number of futures.
ACK_WINDOW = 20_000


class BatchFailed(RuntimeError):
    """Kafka did not acknowledge every event of the batch: nothing of it may be counted as sent."""


def json_default(value: Any) -> Any:
    """What orjson cannot write by itself, as Postgres sources return it."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**63 else float(value)
    if isinstance(value, memoryview | bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


_DUMP_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dump_record(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=json_default, option=_DUMP_OPTIONS)


def batch_event_id(batch_id: str, index: int) -> str:
    """Deterministic, so a batch sent again after a crash carries the same event ids."""
    return f"{batch_id}:{index}"


@dataclass
class BatchResult:
    batch_id: str
    rows: int = 0  # row events, deletes included: the count the end marker announces
    deletes: int = 0
    offsets: dict[str, list[int]] = field(default_factory=dict)  # partition -> [first, last] offset on the topic

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "rows": self.rows, "deletes": self.deletes, "offsets": self.offsets}


class BatchWriter:
    """One batch: add() rows and deletes, finish() sends the end marker and returns once Kafka acknowledged all."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        batch_id: str,
        load_mode: str | None,
        primary_key: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.load_mode = load_mode
        self.primary_key = tuple(primary_key)
        self.result = BatchResult(batch_id)
        self._received_ms = int(time.time() * 1000)
        self._batch_headers = batch_headers(batch_id, load_mode)
        self._futures: list[asyncio.Future] = []

    @property
    def batch_id(self) -> str:
        return self.result.batch_id

    async def add(self, record: dict[str, Any]) -> None:
        await self.add_encoded(dump_record(record), event_key(self.primary_key, record) if self.primary_key else None)
        if record.get(OP_FIELD) == DELETE_OP:
            self.result.deletes += 1

    async def delete(self, key_values: dict[str, Any]) -> None:
        await self.add({OP_FIELD: DELETE_OP, **key_values})

    async def add_encoded(self, value: bytes, key: bytes | None) -> None:
        index = self.result.rows
        headers = event_headers(batch_event_id(self.batch_id, index), self._received_ms) + self._batch_headers
        await self._send(value, key, headers)
        self.result.rows += 1

    async def _send(
        self, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]], partition: int | None = None
    ) -> None:
        try:
            future = await self.producer.send(
                self.topic, value=value, key=key, headers=headers, partition=partition, timestamp_ms=self._received_ms
            )
        except KafkaError as exc:
            raise BatchFailed(f"Kafka refused an event of batch {self.batch_id}: {exc!r}") from exc
        self._futures.append(future)
        if len(self._futures) >= ACK_WINDOW:
            await self._collect()

    async def _collect(self) -> None:
        futures, self._futures = self._futures, []
        results = await asyncio.gather(*futures, return_exceptions=True)
        offsets = self.result.offsets
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise BatchFailed(f"Kafka did not acknowledge batch {self.batch_id}: {outcome!r}")
            span = offsets.get(str(outcome.partition))
            if span is None:
                offsets[str(outcome.partition)] = [outcome.offset, outcome.offset]
            else:
                span[0] = min(span[0], outcome.offset)
                span[1] = max(span[1], outcome.offset)

    async def finish(self) -> BatchResult:
        """The end marker goes out after every row was acknowledged, so no reader sees it before the rows.

        Every marker goes to partition 0: batches apply in the order their markers are read on their partition,
        so one partition for all of a storage's markers puts every batch of the storage in one order.
        """
        await self._collect()
        headers = event_headers(f"{self.batch_id}:end", self._received_ms) + batch_end_headers(
            self.batch_id, self.result.rows, self.load_mode
        )
        await self._send(b"{}", None, headers, partition=MARKER_PARTITION)
        futures, self._futures = self._futures, []
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BatchFailed(f"Kafka did not acknowledge the end marker of batch {self.batch_id}: {exc!r}") from exc
        return self.result

    def abandon(self) -> None:
        """Nobody awaits these acks any more; retrieving their outcome keeps asyncio from logging them as lost."""
        for future in self._futures:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._futures = []


async def read_batch_events(
    consumer: AIOKafkaConsumer, topic: str, batch_id: str, offsets: dict[str, list[int]]
) -> AsyncIterator[list[tuple[bytes, bytes | None]]]:
    """A sent batch's row events (value, key), read back from the ingest topic by its recorded offset ranges.

    The consumer is started and has no subscription; this assigns it the batch's partitions.
    """
    partitions = {TopicPartition(topic, int(p)): (first, last) for p, (first, last) in offsets.items()}
    consumer.assign(list(partitions))
    for tp, (first, _) in partitions.items():
        consumer.seek(tp, first)
    remaining = set(partitions)
    while remaining:
        fetched = await consumer.getmany(*remaining, timeout_ms=5000, max_records=5000)
        if not fetched:
            raise BatchFailed(f"the events of batch {batch_id} are no longer on {topic} (retention?)")
        for tp, messages in fetched.items():
            last = partitions[tp][1]
            found: list[tuple[bytes, bytes | None]] = []
            for message in messages:
                if message.offset > last:
                    break
                headers = read_headers(message.headers)
                if headers.get(BATCH_ID_HEADER) == batch_id and BATCH_ROWS_HEADER not in headers:
                    found.append((message.value, message.key))
            if messages and messages[-1].offset >= last:
                remaining.discard(tp)
            if found:
                yield found
