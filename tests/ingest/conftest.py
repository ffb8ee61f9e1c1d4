"""Ingest services hosted in background threads (so sync tests, hypothesis and schemathesis can call them) and
helpers to create storages and read their ingest topics back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from headrace.catalog import Catalog
from headrace.catalog.provision import create_storage
from headrace.events import read_headers
from headrace.platform.processes import free_port
from headrace.settings import Settings
from ingest.service import IngestService

T = TypeVar("T")


@dataclass
class HostedIngest:
    """An IngestService running on its own event loop in a thread, listening on a free port."""

    settings: Settings
    service: IngestService = field(init=False)
    loop: asyncio.AbstractEventLoop = field(init=False)
    runner: web.AppRunner | None = None
    site: web.TCPSite | None = None

    def __post_init__(self) -> None:
        self.service = IngestService(self.settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ingest", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.settings.service_url("ingest")

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        await self.service.start()
        self.runner = web.AppRunner(self.service.app, access_log=None, shutdown_timeout=10.0)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, self.settings.host, self.settings.ingest_port)
        await self.site.start()

    async def _stop(self) -> None:
        # As serve() does on SIGTERM: stop listening, drain, close connections, then flush the producer.
        if self.runner is not None and self.site is not None:
            await self.site.stop()
            await self.service.drain()
            await self.runner.cleanup()
        await self.service.stop()

    def start(self) -> HostedIngest:
        self.call(self._start())
        return self

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def create_storage(self, name: str, primary_key: list[str] | None = None) -> dict[str, Any]:
        async def create() -> dict[str, Any]:
            assert self.service.catalog is not None
            return await create_storage(self.settings, self.service.catalog, name, primary_key)

        return self.call(create())


def ingest_settings(settings: Settings, **overrides: Any) -> Settings:
    defaults = {"ingest_port": free_port(), "ingest_cache_seconds": 0.2, "database_pool_size": 3}
    return settings.model_copy(update=defaults | overrides)


@pytest.fixture(scope="session")
def ingest(settings: Settings) -> Iterator[HostedIngest]:
    """An ingest service with the default limits."""
    hosted = HostedIngest(ingest_settings(settings)).start()
    yield hosted
    hosted.stop()


SMALL_LIMIT = 64 * 1024
SMALL_BUDGET = 256 * 1024
SMALL_MAX_EVENTS = 100


@pytest.fixture(scope="session")
def small_ingest(settings: Settings) -> Iterator[HostedIngest]:
    """An ingest service with small limits, to reach each cheaply: a 64 KiB body, a 256 KiB in-flight budget,
    100 events per push."""
    hosted = HostedIngest(
        ingest_settings(
            settings,
            ingest_max_body_bytes=SMALL_LIMIT,
            ingest_in_flight_bytes=SMALL_BUDGET,
            ingest_max_events=SMALL_MAX_EVENTS,
        )
    ).start()
    yield hosted
    hosted.stop()


@dataclass
class PushTarget:
    """A storage ready for pushes."""

    id: str
    name: str
    push_url: str
    topic: str
    primary_key: list[str]


def make_target(hosted: HostedIngest, name: str, primary_key: list[str] | None = None) -> PushTarget:
    created = hosted.create_storage(name, primary_key)
    return PushTarget(
        created["id"],
        name,
        created["push_url"].replace(hosted.settings.push_base_url, hosted.url),
        created["ingest_topic"],
        primary_key or [],
    )


@pytest.fixture
def target(ingest: HostedIngest, storage_name: str) -> PushTarget:
    return make_target(ingest, storage_name)


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[ConsumerRecord]:
    """Every record of the topic: waits until `expect` arrived, then until it stays quiet, so extras would show."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < expect and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for rs in batch.values() for r in rs)
        while batch := await consumer.getmany(timeout_ms=700):  # until the topic stays quiet
            records.extend(r for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return records


def event_id(record: ConsumerRecord) -> str:
    return read_headers(record.headers)["hr-event-id"]


async def set_model_and_lock(pool: asyncpg.Pool, storage_name: str, sample: dict[str, Any]) -> None:
    """Give the storage a model inferred from one sample record, then lock it (as `headrace storage lock` would)."""
    catalog = Catalog(pool)
    storage = await catalog.get(storage_name)
    async with pool.acquire() as conn, conn.transaction():
        model = await catalog.model(storage.id, conn)
        change, _ = model.plan([sample])
        await catalog.evolve(conn, storage, model, change)
        await conn.execute("UPDATE headrace.storages SET locked = true WHERE id = $1", storage.id)
