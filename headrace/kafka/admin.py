"""Topic creation: the topics Headrace needs, created once, with the incarnation marker of those it creates."""

from __future__ import annotations

import logging
import uuid

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from headrace.kafka.clients import admin_client
from headrace.settings import Settings

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, names: list[str], partitions: int | None = None) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    Topics whose positions Postgres keeps (ingest topics) go through create_topics with a pool instead, which
    records their incarnation (see headrace.kafka.incarnation).
    """
    await create_topics(settings, None, names, partitions)


async def create_topics(
    settings: Settings, pool: asyncpg.Pool | None, names: list[str], partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet and return those created; existing ones are left as they are.

    With a pool, each topic's new incarnation marker is recorded before the topic exists, so no consumer can take
    a position on the new topic under the old marker; a topic someone else created meanwhile gets its marker back.
    """
    admin: AIOKafkaAdminClient = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if not missing:
            return []
        previous: dict[str, uuid.UUID | None] = {}
        fresh = {name: uuid.uuid4() for name in missing}
        if pool is not None:
            for name in missing:
                previous[name] = await pool.fetchval(
                    "SELECT marker FROM headrace.topic_incarnations WHERE topic = $1", name
                )
                await pool.execute(
                    "INSERT INTO headrace.topic_incarnations (topic, marker) VALUES ($1, $2)"
                    " ON CONFLICT (topic) DO UPDATE SET marker = EXCLUDED.marker, created_at = now()",
                    name,
                    fresh[name],
                )
        created: list[str] = []
        for name in missing:
            topic = NewTopic(
                name,
                num_partitions=partitions or settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            try:
                await admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                if pool is not None:
                    await _restore_marker(pool, name, fresh[name], previous.get(name))
        if created:
            log.info("created topics", extra={"topics": created})
        return created
    finally:
        await admin.close()


async def _restore_marker(pool: asyncpg.Pool, topic: str, ours: uuid.UUID, previous: uuid.UUID | None) -> None:
    if previous is None:
        await pool.execute("DELETE FROM headrace.topic_incarnations WHERE topic = $1 AND marker = $2", topic, ours)
    else:
        await pool.execute(
            "UPDATE headrace.topic_incarnations SET marker = $3 WHERE topic = $1 AND marker = $2", topic, ours, previous
        )


# Kafka's UNKNOWN_TOPIC_OR_PARTITION: a topic to delete that is gone already.
_UNKNOWN_TOPIC = 3


async def delete_topics(settings: Settings, names: list[str]) -> None:
    """Delete the topics; one that does not exist counts as deleted. Any other refusal raises KafkaError."""
    admin: AIOKafkaAdminClient = admin_client(settings)
    await admin.start()
    try:
        response = await admin.delete_topics(names)
    finally:
        await admin.close()
    refused = [(topic, code) for topic, code in response.topic_error_codes if code not in (0, _UNKNOWN_TOPIC)]
    if refused:
        raise KafkaError(f"the cluster refused to delete {', '.join(f'{t} (error {c})' for t, c in refused)}")
    log.info("deleted topics", extra={"topics": names})
