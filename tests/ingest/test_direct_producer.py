"""Direct producers (L2): a JSON value produced straight to a storage's ingest topic becomes a row, like a push."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

from tests.conftest import RunningPlatform
from tests.eventually import eventually


async def test_a_json_value_produced_to_the_ingest_topic_becomes_a_row(
    platform: RunningPlatform, storage_name: str
) -> None:
    created = await asyncio.to_thread(platform.cli_json, "storage", "create", storage_name)
    topic = created["ingest_topic"]
    assert topic == f"headrace.ingest.{storage_name}"
    producer = AIOKafkaProducer(bootstrap_servers=platform.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, orjson.dumps({"source": "kafka", "n": 7}))
    finally:
        await producer.stop()

    async def queried() -> list:
        return await asyncio.to_thread(platform.cli_json, "storage", "query", storage_name)

    rows = await eventually(queried, what="the produced value as a row")
    assert len(rows) == 1
    assert rows[0]["source"] == "kafka" and rows[0]["n"] == 7
