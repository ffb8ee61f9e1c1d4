"""Creating a storage end to end: its Kafka topics, its catalog entry and table, and its push URL."""

from __future__ import annotations

from typing import Any

from headrace.catalog.storages import Catalog, validate_storage_name
from headrace.kafka import Topics, create_topics
from headrace.settings import Settings


async def create_storage(
    settings: Settings, catalog: Catalog, name: str, primary_key: list[str] | None = None, load_mode: str = "append"
) -> dict[str, Any]:
    """Create the storage and its topics; the answer carries the push URL, the only time its token is shown."""
    validate_storage_name(name)
    topics = Topics(settings.topic_prefix)
    # Topics first: creating them twice is harmless, a storage whose topics are missing is not. The ingest
    # topic's incarnation is recorded, so positions taken on an earlier topic of that name are never used.
    await create_topics(settings, catalog.pool, [topics.ingest(name), topics.dead_letter])
    storage, token = await catalog.create(name, primary_key=primary_key, load_mode=load_mode)
    return storage.to_json() | {
        "push_url": storage.push_url(settings.push_base_url, token),
        "ingest_topic": topics.ingest(name),
    }
