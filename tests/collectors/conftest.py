"""Collector fixtures: source tables in the session database, an in-process runner, and polling helpers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import asyncpg
import pytest

from headrace.catalog import Catalog, StorageNotFound
from headrace.kafka import producer
from headrace.platform.scratch import ScratchS3, ScratchSftp, running_s3, running_sftp
from headrace.query import fetch_rows
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition
from ingest.collectors.runner import CollectorRunner, create_collector

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 60.0, interval: float = 0.3) -> T:
    """Poll until check() returns without an AssertionError; then return its value (or raise its last error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def storage_rows(pool: asyncpg.Pool, name: str, *fields: str) -> list[tuple]:
    """The storage's rows as sorted tuples of the given fields (empty while the storage does not exist)."""
    catalog = Catalog(pool)
    try:
        storage = await catalog.get(name)
    except StorageNotFound:
        return []
    return sorted(tuple(row.get(f) for f in fields) for row in await fetch_rows(catalog, storage))


async def rows_become(pool: asyncpg.Pool, name: str, fields: tuple[str, ...], expected: list[tuple]) -> None:
    async def check() -> None:
        assert await storage_rows(pool, name, *fields) == sorted(expected)

    await eventually(check)


@pytest.fixture
def source_table() -> str:
    return f"src_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def runner(platform: Any, settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[CollectorRunner]:
    """A runner in this process; the platform's transform applies what it sends."""
    kafka = producer(settings)
    await kafka.start()
    yield CollectorRunner(settings, Catalog(pool), kafka)
    await kafka.stop()


async def make_collector(settings: Settings, pool: asyncpg.Pool, **fields: Any) -> str:
    definition = CollectorDefinition.model_validate(fields)
    await create_collector(settings, Catalog(pool), definition)
    return definition.name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[ScratchS3]:
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def sftp_server(work_dir: Path) -> Iterator[ScratchSftp]:
    with running_sftp(work_dir) as server:
        yield server


def s3_client(server: ScratchS3) -> Any:
    session = aioboto3.Session(
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name=server.region,
    )
    return session.client("s3", endpoint_url=server.endpoint_url)


@pytest.fixture
async def bucket(s3_server: ScratchS3) -> str:
    name = f"collect-{uuid.uuid4().hex[:10]}"
    async with s3_client(s3_server) as client:
        await client.create_bucket(Bucket=name)
    return name
