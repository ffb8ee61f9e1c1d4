"""Topic incarnations: which life of a topic a stored position belongs to.

An in-memory broker that restarts, or a topic deleted and created again, starts its offsets at 0 while Postgres
still holds the old positions; using them would skip every new event below them. An incarnation is the Kafka
cluster id (the embedded broker gets a new one at every start) plus a marker Headrace records in Postgres, before
creating a topic, whenever it creates one. A position taken on another incarnation is not used: the partition is
read again from its beginning (the event-id window drops what was written already).
"""

from __future__ import annotations

import asyncpg
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataRequest

from headrace.kafka.clients import metadata_client
from headrace.settings import Settings


async def cluster_id(client: AIOKafkaClient) -> str:
    """The cluster id the brokers report in their metadata (version 2 and later), '' when they report none."""
    node = client.get_random_node()
    if node is None:
        await client.force_metadata_update()
        node = client.get_random_node()
    response = await client.send(node, MetadataRequest([]))
    return getattr(response, "cluster_id", None) or ""


async def fetch_cluster_id(settings: Settings) -> str:
    client = metadata_client(settings)
    await client.bootstrap()
    try:
        return await cluster_id(client)
    finally:
        await client.close()


class Incarnations:
    """The current incarnation of topics: `<cluster id>/<marker>`, the marker '-' for topics Headrace did not create."""

    def __init__(self, pool: asyncpg.Pool, cluster: str) -> None:
        self.pool = pool
        self.cluster = cluster

    async def current(self, topics: list[str]) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT topic, marker FROM headrace.topic_incarnations WHERE topic = ANY($1::text[])", topics
        )
        markers = {r["topic"]: str(r["marker"]) for r in rows}
        return {topic: f"{self.cluster}/{markers.get(topic, '-')}" for topic in topics}
