"""Transform test helpers: worker processes on their own topic prefix, storages, producing events, waiting for rows."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from headrace.catalog import Catalog, Storage
from headrace.kafka import Topics, create_topics, ensure_topics
from headrace.settings import Settings
from tests.conftest import clean_environ
from tests.services import ServiceProcess


def Worker(env: dict[str, str], log_path: Path) -> ServiceProcess:
    """One `python -m transform` process."""
    return ServiceProcess("transform worker", "transform", env, "HEADRACE_TRANSFORM_PORT", log_path)


@dataclass
class TransformLab:
    """Workers and storages under one topic prefix no other test (nor the platform's transform) consumes."""

    settings: Settings
    env: dict[str, str]
    pool: asyncpg.Pool
    log_dir: Path
    workers: list[ServiceProcess] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    def worker(self) -> ServiceProcess:
        worker = Worker(self.env, self.log_dir / f"transform-{len(self.workers)}.log")
        self.workers.append(worker)
        worker.start()
        return worker

    async def storage(self, name: str, load_mode: str = "append", primary_key: list[str] | None = None) -> Storage:
        await create_topics(self.settings, self.pool, [self.topics.ingest(name)])
        storage, _ = await Catalog(self.pool).create(name, primary_key=primary_key, load_mode=load_mode)
        return storage

    async def produce(
        self,
        name: str,
        values: list[bytes | None],
        keys: list[bytes | None] | None = None,
        headers: list[list[tuple[str, bytes]]] | None = None,
        partition: int | None = None,
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=5, acks="all")
        await producer.start()
        try:
            topic = self.topics.ingest(name)
            futures = []
            for i, value in enumerate(values):
                key = keys[i] if keys else None
                futures.append(
                    await producer.send(
                        topic,
                        value=value,
                        key=key,
                        headers=headers[i] if headers else [],
                        partition=partition if partition is not None else (None if key else i % 4),
                    )
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def consumed(self, name: str) -> int:
        """Events the workers committed as taken from the storage's ingest topic."""
        return await self.pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM headrace.stream_positions WHERE group_name = $1 AND topic = $2",
            self.topics.group("transform"),
            self.topics.ingest(name),
        )

    async def exactly_once(self, storage: Storage) -> tuple[int, int]:
        """Rows, and distinct ingest events (partition, offset) they came from."""
        found = await self.pool.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT (_source_partition, _source_offset)) AS d"
            f" FROM {storage.qualified_table}"
        )
        return found["n"], found["d"]

    async def rows(self, storage: Storage, order: str = "_source_partition, _source_offset") -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(f"SELECT * FROM {storage.qualified_table} ORDER BY {order}")]

    async def count(self, storage: Storage) -> int:
        return await self.pool.fetchval(f"SELECT count(*) FROM {storage.qualified_table}")

    async def positions_done(self, name: str, expected_total: int) -> bool:
        """Whether the committed positions of the storage's ingest topic add up to expected_total events."""
        done = await self.pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM headrace.stream_positions WHERE group_name = $1 AND topic = $2",
            self.topics.group("transform"),
            self.topics.ingest(name),
        )
        return done >= expected_total


def json_values(records: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


@pytest.fixture(scope="session")
def lab_env(kafka_bootstrap: str, database_url: str) -> dict[str, str]:
    prefix = f"tt{uuid.uuid4().hex[:8]}"
    return clean_environ() | {
        "HEADRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HEADRACE_DATABASE_URL": database_url,
        "HEADRACE_TOPIC_PREFIX": prefix,
        "HEADRACE_LOG_LEVEL": os.environ.get("HEADRACE_TEST_TRANSFORM_LOG_LEVEL", "WARNING"),
        "HEADRACE_DATABASE_POOL_SIZE": "4",
    }


@pytest.fixture(scope="session")
async def lab(
    lab_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path, kafka_bootstrap: str, database_url: str
) -> AsyncIterator[TransformLab]:
    """A transform lab with one running worker, shared by the load-mode tests."""
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, database_url=database_url, topic_prefix=lab_env["HEADRACE_TOPIC_PREFIX"]
    )
    await ensure_topics(settings, [Topics(settings.topic_prefix).dead_letter])
    lab = TransformLab(settings, lab_env, pool, work_dir)
    await lab.worker().ready()
    yield lab
    for worker in lab.workers:
        worker.stop()


@pytest.fixture
def isolated_env(kafka_bootstrap: str, database_url: str) -> Iterator[dict[str, str]]:
    """An environment with a topic prefix of its own, for tests that run their own workers."""
    prefix = f"ti{uuid.uuid4().hex[:8]}"
    yield clean_environ() | {
        "HEADRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HEADRACE_DATABASE_URL": database_url,
        "HEADRACE_TOPIC_PREFIX": prefix,
        "HEADRACE_LOG_LEVEL": "WARNING",
        "HEADRACE_DATABASE_POOL_SIZE": "4",
    }


def lab_for(env: dict[str, str], pool: asyncpg.Pool, log_dir: Path) -> TransformLab:
    """A lab on an environment of its own (its own topic prefix, its own workers)."""
    settings = Settings(
        kafka_bootstrap=env["HEADRACE_KAFKA_BOOTSTRAP"],
        database_url=env["HEADRACE_DATABASE_URL"],
        topic_prefix=env["HEADRACE_TOPIC_PREFIX"],
    )
    return TransformLab(settings, env, pool, log_dir)
