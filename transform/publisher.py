"""Publishes written rows to `<prefix>.rows.<storage>` (the contract is headrace.rows) and repairs gaps after a crash.

Rows go out only after their write transaction committed, so the rows topic never holds a row Postgres lost.
How far each ingest partition's rows are published is kept in headrace.rows_published; a worker that dies
between its commit and that mark leaves a range [published, committed) that the next owner of the
partition republishes from the table before it writes anything new (identical duplicates are possible,
and the exporter drops them by `_source_offset`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from headrace.catalog import Catalog, Storage
from headrace.kafka import Topics, ensure_topics
from headrace.models import Model
from headrace.query import stored_columns, stored_row
from headrace.rows import encode_row
from headrace.settings import Settings

log = logging.getLogger(__name__)

ROWS_PUBLISHED = Counter("headrace_transform_rows_published_total", "Rows published to rows topics", ["storage"])
ROWS_REPUBLISHED = Counter(
    "headrace_transform_rows_republished_total",
    "Rows republished after a crash between commit and publish",
    ["storage"],
)


class RowsPublisher:
    """Sends rows to their storage's rows topic, on the partition number of the ingest event they came from."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, pool: asyncpg.Pool, catalog: Catalog) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.producer = producer
        self.pool = pool
        self.catalog = catalog
        self._ready_topics: set[str] = set()

    async def ensure_rows_topic(self, storage_name: str, partitions: int) -> None:
        """The rows topic, with as many partitions as the ingest topic, so partition numbers carry over."""
        topic = self.topics.rows(storage_name)
        if topic not in self._ready_topics:
            await ensure_topics(self.settings, [topic], partitions=partitions)
            self._ready_topics.add(topic)

    async def send(self, storage_name: str, rows: list[dict[str, Any]]) -> None:
        """Send rows (ordered by source partition and offset) and wait until Kafka acknowledged every one."""
        if not rows:
            return
        topic = self.topics.rows(storage_name)
        # Whole batches per partition: far cheaper per row than producer.send, and still in order per partition.
        futures = []
        batches: dict[int, Any] = {}
        for row in rows:
            partition = row["_source_partition"]
            value = encode_row(row)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = self.producer.create_batch()
            if batch.append(key=None, value=value, timestamp=None) is None:
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = self.producer.create_batch()
                batch.append(key=None, value=value, timestamp=None)
        for partition, batch in batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        ROWS_PUBLISHED.labels(storage_name).inc(len(rows))

    async def mark(self, ingest_topic: str, next_offsets: dict[int, int]) -> None:
        """Every row of these partitions below these offsets is on the rows topic."""
        await self.pool.execute(
            "INSERT INTO headrace.rows_published (topic, partition, next_offset)"
            " SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS u(p, o)"
            " ON CONFLICT (topic, partition) DO UPDATE"
            " SET next_offset = GREATEST(rows_published.next_offset, EXCLUDED.next_offset), updated_at = now()",
            ingest_topic,
            list(next_offsets),
            list(next_offsets.values()),
        )

    async def publish(
        self, ingest_topic: str, storage_name: str, rows: list[dict[str, Any]], next_offsets: dict[int, int]
    ) -> None:
        await self.send(storage_name, rows)
        await self.mark(ingest_topic, next_offsets)

    async def publish_swapped(self, storage: Storage, batch_id: str, swapped_at: datetime) -> None:
        """Publish a replace batch now in the storage, then mark the batch done."""
        rows = await self.rows_from_table(storage, "_inserted_at = $1", [swapped_at])
        await self.send(storage.name, rows)
        await self.pool.execute(
            "UPDATE headrace.batches SET state = 'published' WHERE storage_id = $1 AND batch_id = $2"
            " AND state = 'swapped'",
            storage.id,
            batch_id,
        )

    async def rows_from_table(self, storage: Storage, where: str, args: list[Any]) -> list[dict[str, Any]]:
        model: Model = await self.catalog.model(storage.id)
        records = await self.pool.fetch(
            f"SELECT {stored_columns(model)} FROM {storage.qualified_table}"
            f" WHERE {where} ORDER BY _source_partition, _source_offset",
            *args,
        )
        return [stored_row(record, model) for record in records]

    async def repair(self, storage: Storage, ingest_topic: str, committed: dict[int, int | None]) -> None:
        """On assignment: republish what was committed but not published, for these partitions of one storage."""
        found = await self.pool.fetch(
            "SELECT partition, next_offset FROM headrace.rows_published"
            " WHERE topic = $1 AND partition = ANY($2::int[])",
            ingest_topic,
            list(committed),
        )
        published = {r["partition"]: r["next_offset"] for r in found}
        # Batch rows reach the table only when their batch is applied; those batches are tracked by state.
        for batch in await self.pool.fetch(
            "SELECT batch_id, swapped_at FROM headrace.batches WHERE storage_id = $1 AND state = 'swapped'",
            storage.id,
        ):
            log.warning("republishing an applied batch", extra={"storage": storage.name})
            await self.publish_swapped(storage, batch["batch_id"], batch["swapped_at"])
        if storage.load_mode == "replace":
            return
        behind: dict[int, int] = {}
        for partition, next_offset in committed.items():
            if next_offset is not None and published.get(partition, 0) < next_offset:
                start = published.get(partition, 0)
                rows = await self.rows_from_table(
                    storage,
                    "_source_partition = $1 AND _source_offset >= $2 AND _source_offset < $3",
                    [partition, start, next_offset],
                )
                log.warning(
                    "republishing rows committed but not published",
                    extra={"storage": storage.name, "partition": partition, "from": start, "to": next_offset},
                )
                await self.send(storage.name, rows)
                ROWS_REPUBLISHED.labels(storage.name).inc(len(rows))
                behind[partition] = next_offset
        if behind:
            await self.mark(ingest_topic, behind)
