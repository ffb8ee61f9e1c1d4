"""Collectors reach only what they may: internal hosts refused unless allowed, HTTP kept on its origin and bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from headrace.catalog import Catalog
from headrace.outbound import OutboundRefused
from headrace.platform.processes import free_port
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition
from ingest.collectors.extractor import SourceError
from ingest.collectors.runner import CollectorRunner, create_collector
from tests.collectors.conftest import make_collector, rows_become
from tests.conftest import ADMIN, RunningPlatform

SECRET_HEADER = {"X-Api-Key": "only-for-the-source"}
ITEMS = [{"id": i} for i in range(1, 4)]


@dataclass
class Api:
    """A test server on 127.0.0.1; `other` is the same server named `localhost`: another origin, also allowed."""

    base: str
    other: str
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, X-Api-Key) of every request


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async def handle(request: web.Request) -> web.StreamResponse:
        served.seen.append((request.path, request.headers.get("X-Api-Key")))
        path = request.path
        if path == "/items":
            return web.json_response({"items": ITEMS, "next": None})
        if path == "/leave":  # a next link to another origin
            return web.json_response({"items": ITEMS[:1], "next": f"{served.other}/items"})
        if path == "/hop":  # redirected twice on the same origin, relative then absolute
            raise web.HTTPFound("/hop2")
        if path == "/hop2":
            raise web.HTTPTemporaryRedirect(f"{served.base}/items")
        if path == "/away":
            raise web.HTTPFound(f"{served.other}/items")
        if path.startswith("/loop"):
            raise web.HTTPFound(f"/loop{len(path)}")
        if path == "/huge":  # streamed without a Content-Length
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"items": [')
            for i in range(2000):
                await response.write(b'{"id": %d, "pad": "%s"},' % (i, b"x" * 100))
            await response.write(b'{"id": -1}]}')
            return response
        if path == "/slow":
            await asyncio.sleep(3)
            return web.json_response({"items": ITEMS})
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    served = Api(f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    yield served
    await runner.cleanup()


def http(url: str, **more: Any) -> dict[str, Any]:
    return {"kind": "http", "url": url, "headers": SECRET_HEADER, "records_path": "items"} | more


async def collect(runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, name: str, source: dict) -> Any:
    await make_collector(settings, pool, name=name, storage=name, source=source)
    return await runner.run(name)


async def test_same_origin_redirects_are_followed_with_the_headers(
    runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, api: Api, storage_name: str
) -> None:
    await collect(runner, settings, pool, storage_name, http(f"{api.base}/hop"))
    await rows_become(pool, storage_name, ("id",), [(i["id"],) for i in ITEMS])
    assert api.seen == [(p, SECRET_HEADER["X-Api-Key"]) for p in ("/hop", "/hop2", "/items")]


@pytest.mark.parametrize(
    ("path", "pagination", "refusal"),
    [
        (
            "/leave",
            {"pagination": "next", "next_path": "next"},
            "the next link http://localhost:.* leaves the source's origin",
        ),
        ("/away", {}, "a redirect to http://localhost:.* leaves the source's origin"),
        ("/loop", {}, "more than 5 redirects"),
    ],
)
async def test_requests_never_leave_the_source_origin(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    api: Api,
    storage_name: str,
    path: str,
    pagination: dict,
    refusal: str,
) -> None:
    with pytest.raises(SourceError, match=refusal):
        await collect(runner, settings, pool, storage_name, http(f"{api.base}{path}", **pagination))
    # Nothing, secret headers least of all, went to the other origin (the same server under another name).
    assert "/items" not in [seen_path for seen_path, _ in api.seen]


async def test_a_response_past_the_size_cap_fails_clearly(
    runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, api: Api, storage_name: str
) -> None:
    capped = settings.model_copy(update={"collector_http_max_bytes": 64 * 1024})
    small = CollectorRunner(capped, runner.catalog, runner.producer)
    with pytest.raises(SourceError, match=r"larger than 65536 bytes \(HEADRACE_COLLECTOR_HTTP_MAX_BYTES\)"):
        await collect(small, settings, pool, storage_name, http(f"{api.base}/huge"))
    await collect(runner, settings, pool, f"{storage_name}_whole", http(f"{api.base}/huge"))  # within 50 MiB


async def test_a_request_past_its_time_fails_clearly(
    runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, api: Api, storage_name: str
) -> None:
    hurried = CollectorRunner(
        settings.model_copy(update={"collector_http_timeout_seconds": 0.5}), runner.catalog, runner.producer
    )
    with pytest.raises(SourceError, match="TimeoutError"):
        await collect(hurried, settings, pool, storage_name, http(f"{api.base}/slow"))


async def test_internal_hosts_are_refused_unless_allowed(
    runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, database_url: str, storage_name: str
) -> None:
    closed = settings.model_copy(update={"outbound_allow": ""})

    def collector(name: str, dsn: str) -> CollectorDefinition:
        source = {"kind": "postgres", "dsn": dsn, "table": "t"}
        return CollectorDefinition.model_validate({"name": name, "storage": storage_name, "source": source})

    definition = collector(storage_name, database_url)
    # At creation, the address is literal: refused at once, and no storage is made for it.
    with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address.*HEADRACE_OUTBOUND_ALLOW"):
        await create_collector(closed, Catalog(pool), definition)
    assert await pool.fetchval("SELECT count(*) FROM headrace.storages WHERE name = $1", storage_name) == 0

    # Created where loopback is allowed, then run where it is not: refused before connecting.
    await create_collector(settings, Catalog(pool), definition)
    with pytest.raises(SourceError, match=r"cannot connect to the source database: 127\.0\.0\.1 is a loopback address"):
        await CollectorRunner(closed, runner.catalog, runner.producer).run(storage_name)
    # localhost is loopback by definition, whatever it resolves to.
    named = collector(f"{storage_name}_named", database_url.replace("127.0.0.1", "localhost"))
    with pytest.raises(OutboundRefused, match=r"localhost \(which resolves to 127.0.0.1\) is a loopback address"):
        await create_collector(closed, Catalog(pool), named)


async def test_the_api_answers_422_for_an_internal_address(platform: RunningPlatform, storage_name: str) -> None:
    base = platform.settings.service_url("ingest") + "/api/collectors"
    sources = [
        {"kind": "postgres", "dsn": "postgresql://app:pw@169.254.169.254/db", "table": "t"},
        {"kind": "http", "url": "http://10.0.0.1/latest/meta-data"},
        {"kind": "postgres", "dsn": "postgresql:///db?host=/var/run/postgresql", "table": "t"},
        {"kind": "s3", "bucket": "b", "pattern": "*", "endpoint_url": "http://[fd00::1]:9000"},
    ]
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        for source in sources:
            body = {"name": storage_name, "storage": storage_name, "source": source}
            async with session.post(base, json=body) as response:
                error = (await response.json())["error"]
                assert response.status == 422 and ("address" in error or "local socket" in error), error
                assert "pw" not in error
