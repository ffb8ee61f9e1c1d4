"""Collector fixtures: source tables in the session database, an in-process runner, and polling helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import asyncpg
import pytest

from headrace.catalog import Catalog, StorageNotFound
from headrace.kafka import producer
from headrace.query import fetch_rows
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition
from ingest.collectors.runner import CollectorRunner, create_collector
from tests.eventually import eventually

T = TypeVar("T")


async def storage_rows(pool: asyncpg.Pool, name: str, *fields: str) -> list[tuple]:
    """The storage's rows as sorted tuples of the given fields (empty while the storage does not exist)."""
    catalog = Catalog(pool)
    try:
        storage = await catalog.get(name)
    except StorageNotFound:
        return []
    return sorted(tuple(row.get(f) for f in fields) for row in await fetch_rows(catalog, storage))


async def rows_become(pool: asyncpg.Pool, name: str, fields: tuple[str, ...], expected: list[tuple]) -> None:
    async def check() -> bool:
        assert await storage_rows(pool, name, *fields) == sorted(expected)
        return True

    await eventually(check, what=f"the rows of {name}")


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
