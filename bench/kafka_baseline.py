"""Raw aiokafka produce (acks=all) and consume throughput on the dev broker: the baseline other benchmarks divide by."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness import BenchEnv, Figure
from headrace.kafka import ensure_topics

NEEDS_POSTGRES = False
MESSAGES = 200_000
VALUE = b'{"event":"page_view","user":"u-000123","hit_time_utc":"2021-04-08T10:58:14Z","n":42}'


async def produce(bootstrap: str, topic: str, count: int, value: bytes = VALUE) -> float:
    """Seconds to produce `count` messages with a plain aiokafka producer, every one acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value) for _ in range(count)]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batch and started is None:
                started = time.perf_counter()  # group join time is not throughput
            seen += sum(len(m) for m in batch.values())
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


async def run(env: BenchEnv) -> list[Figure]:
    topic = f"bench.baseline.{uuid.uuid4().hex[:8]}"
    await ensure_topics(env.settings, [topic])
    bootstrap = env.settings.require_kafka_bootstrap()
    produce_s = await produce(bootstrap, topic, MESSAGES)
    consume_s = await consume(bootstrap, topic, MESSAGES)
    mib = MESSAGES * len(VALUE) / 2**20
    return [
        Figure("raw aiokafka produce, acks=all", MESSAGES / produce_s, "msg/s"),
        Figure("raw aiokafka produce", mib / produce_s, "MiB/s"),
        Figure("raw aiokafka consume", MESSAGES / consume_s, "msg/s"),
        Figure("raw aiokafka consume", mib / consume_s, "MiB/s"),
    ]
