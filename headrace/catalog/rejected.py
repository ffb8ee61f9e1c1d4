"""Rejected rows: values a locked model refused, kept with their reason, listed and replayed through Kafka."""

from __future__ import annotations

from typing import Any

import orjson

from headrace.catalog.storages import Catalog, Storage
from headrace.events import event_headers, event_key
from headrace.kafka import Topics, producer
from headrace.progress import Progress
from headrace.settings import Settings


async def list_rejected(catalog: Catalog, storage: Storage, include_replayed: bool = False) -> list[dict[str, Any]]:
    rows = await catalog.pool.fetch(
        "SELECT id, event_id, payload, reason, source, rejected_at, replayed_at FROM headrace.rejected_rows"
        " WHERE storage_id = $1 AND ($2 OR replayed_at IS NULL) ORDER BY id",
        storage.id,
        include_replayed,
    )
    return [dict(r) for r in rows]


async def replay_rejected(
    settings: Settings, catalog: Catalog, storage: Storage, progress: Progress | None = None
) -> int:
    """Send every pending rejected row back through the storage's ingest topic, then mark it replayed.

    The rows are marked in the transaction that holds them, after Kafka acknowledged them: a crash in
    between replays them again rather than losing them. A row that still does not fit is rejected anew.
    """
    topic = Topics(settings.topic_prefix).ingest(storage.name)
    kafka = producer(settings)
    await kafka.start()
    try:
        async with catalog.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, payload, extract(epoch FROM rejected_at) * 1000 AS rejected_ms"
                " FROM headrace.rejected_rows WHERE storage_id = $1 AND replayed_at IS NULL"
                " ORDER BY id FOR UPDATE SKIP LOCKED",
                storage.id,
            )
            progress = progress or Progress("rows")
            progress.total = len(rows)
            futures = [
                await kafka.send(
                    topic,
                    value=orjson.dumps(row["payload"]),
                    key=event_key(storage.primary_key, row["payload"]),
                    headers=event_headers(row["event_id"] or f"rejected:{row['id']}", int(row["rejected_ms"])),
                )
                for row in rows
            ]
            for future in futures:
                await future
                progress.add(1)
            await conn.execute(
                "UPDATE headrace.rejected_rows SET replayed_at = now() WHERE id = ANY($1::bigint[])",
                [row["id"] for row in rows],
            )
        return len(rows)
    finally:
        await kafka.stop()
