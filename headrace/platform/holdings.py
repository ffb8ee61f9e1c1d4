"""What a Kafka cluster holds, counted as a consumer sees it, and how much of it transform has not written yet."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import TopicPartition

from headrace.kafka.clients import consumer, metadata_client
from headrace.kafka.topics import Topics
from headrace.settings import Settings


@dataclass(frozen=True)
class Span:
    """A partition's first offset and the offset after its last event."""

    earliest: int
    end: int

    @property
    def events(self) -> int:
        return max(self.end - self.earliest, 0)


async def _partitions(settings: Settings, only: Callable[[str], object]) -> list[TopicPartition]:
    client = metadata_client(settings)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
    finally:
        await client.close()
    return [
        TopicPartition(topic, partition)
        for topic in sorted(cluster.topics())
        if only(topic)
        for partition in sorted(cluster.partitions_for_topic(topic) or ())
    ]


async def partition_spans(
    settings: Settings, only: Callable[[str], object] = bool, timeout: float = 10.0
) -> dict[TopicPartition, Span]:
    """Every partition's span, its end taken from what a consumer is sent rather than from ListOffsets alone.

    Tansu answers ListOffsets(latest) with its last record batch's base offset + 1, short of the rest of that
    batch. A fetch from just below that offset returns the last batch whole, and every fetch answer carries the
    partition's high watermark: the end is the largest of the three.
    """
    partitions = await _partitions(settings, only)
    if not partitions:
        return {}
    reader = consumer(settings)
    await reader.start()
    try:
        earliest = await reader.beginning_offsets(partitions)
        ends = dict(await reader.end_offsets(partitions))
        reader.assign(partitions)
        for tp in partitions:
            reader.seek(tp, max(earliest[tp], ends[tp] - 1))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A partition has been answered once its high watermark is known, even when the answer held no records.
        while any(reader.highwater(tp) is None for tp in partitions) and loop.time() < deadline:
            for tp, records in (await reader.getmany(timeout_ms=100)).items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
        for tp in partitions:
            ends[tp] = max(ends[tp], reader.highwater(tp) or 0)
    finally:
        await reader.stop()
    return {tp: Span(earliest[tp], ends[tp]) for tp in partitions}


async def events_by_topic(settings: Settings) -> dict[str, int]:
    """Events the cluster holds in each topic: the sum over its partitions of end minus first offset."""
    held: dict[str, int] = {}
    for tp, span in (await partition_spans(settings)).items():
        held[tp.topic] = held.get(tp.topic, 0) + span.events
    return held


class Drain:
    """Transform's progress through the ingest topics, read from the positions it commits in Postgres."""

    def __init__(self, settings: Settings, since: datetime) -> None:
        self.settings = settings
        topics = Topics(settings.topic_prefix)
        self.group = topics.group("transform")
        self.pattern = re.compile(topics.ingest_pattern)
        # Positions older than this were taken on a previous broker's topics (the embedded one starts empty).
        self.since = since

    async def unwritten(self, pool: asyncpg.Pool, spans: dict[TopicPartition, Span]) -> int:
        rows = await pool.fetch(
            "SELECT topic, partition, next_offset FROM headrace.stream_positions"
            " WHERE group_name = $1 AND updated_at >= $2",
            self.group,
            self.since,
        )
        written = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        return sum(
            max(span.end - max(written.get((tp.topic, tp.partition), span.earliest), span.earliest), 0)
            for tp, span in spans.items()
        )

    async def wait(self, seconds: float, hurry: asyncio.Event) -> int:
        """Wait, at most `seconds` or until `hurry` is set, until transform has written every event the ingest
        topics hold; return how many it has not. Call it once nothing produces to them any more."""
        spans = await partition_spans(self.settings, only=self.pattern.match)
        pool = await asyncpg.create_pool(self.settings.require_database_url(), min_size=1, max_size=1)
        try:
            deadline = asyncio.get_running_loop().time() + seconds
            while True:
                left = await self.unwritten(pool, spans)
                if left == 0 or hurry.is_set() or asyncio.get_running_loop().time() >= deadline:
                    return left
                try:
                    await asyncio.wait_for(hurry.wait(), 0.2)
                except TimeoutError:
                    pass
        finally:
            await pool.close()
