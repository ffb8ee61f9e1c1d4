"""The HTTP JSON API source against a real paginated server, and the collectors' HTTP routes on ingest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from headrace.platform.processes import free_port
from headrace.settings import Settings
from ingest.collectors.runner import CollectorRunner
from tests.collectors.conftest import make_collector, rows_become
from tests.conftest import ADMIN

ITEMS = [{"id": i, "title": f"item {i}", "price": i * 1.5} for i in range(1, 8)]


@pytest.fixture
async def paginated_api() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A JSON API over real HTTP: page-numbered `?page=&size=` and next-link pages, records under data.items."""
    seen: list[dict[str, Any]] = []

    async def by_page(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        page, size = int(request.query["page"]), int(request.query["size"])
        return web.json_response({"data": {"items": ITEMS[(page - 1) * size : page * size]}})

    async def by_link(request: web.Request) -> web.Response:
        start = int(request.query.get("from", "0"))
        chunk = ITEMS[start : start + 3]
        following = f"{base}/linked?from={start + 3}" if start + 3 < len(ITEMS) else None
        return web.json_response({"results": chunk, "next": following})

    app = web.Application()
    app.router.add_get("/paged", by_page)
    app.router.add_get("/linked", by_link)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    yield base, seen
    await runner.cleanup()


async def test_an_http_api_is_collected_page_by_page(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    paginated_api: tuple[str, list[dict[str, Any]]],
    storage_name: str,
) -> None:
    base, seen = paginated_api
    name = await make_collector(
        settings,
        pool,
        name=storage_name + "_paged",
        storage=storage_name,
        source={
            "kind": "http",
            "url": f"{base}/paged",
            "records_path": "data.items",
            "pagination": "page",
            "page_param": "page",
            "size_param": "size",
            "page_size": 3,
        },
    )
    result = await runner.run(name)
    assert [b["rows"] for b in result["batches"]] == [len(ITEMS)]
    assert [q["page"] for q in seen][:3] == ["1", "2", "3"]
    expected = [(i["id"], i["title"], i["price"]) for i in ITEMS]
    await rows_become(pool, storage_name, ("id", "title", "price"), expected)


async def test_next_links_are_followed(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    paginated_api: tuple[str, list[dict[str, Any]]],
    storage_name: str,
) -> None:
    base, _ = paginated_api
    name = await make_collector(
        settings,
        pool,
        name=storage_name + "_linked",
        storage=storage_name,
        source={
            "kind": "http",
            "url": f"{base}/linked",
            "records_path": "results",
            "pagination": "next",
            "next_path": "next",
        },
    )
    await runner.run(name)
    await rows_become(pool, storage_name, ("id",), [(i["id"],) for i in ITEMS])


async def test_the_collectors_http_api(
    platform: Any,
    pool: asyncpg.Pool,
    database_url: str,
    source_table: str,
    storage_name: str,
) -> None:
    await pool.execute(f"CREATE TABLE {source_table} (id int PRIMARY KEY, v text)")
    await pool.execute(f"INSERT INTO {source_table} VALUES (1, 'a'), (2, 'b')")
    base = platform.settings.service_url("ingest") + "/api/collectors"
    definition = {
        "name": source_table,
        "storage": storage_name,
        "source": {"kind": "postgres", "dsn": database_url, "table": f"public.{source_table}"},
    }
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(base, json=definition) as response:
            assert response.status == 201, await response.text()
        async with session.post(base, json=definition) as response:
            assert response.status == 409
        async with session.post(base, json={"name": "x", "storage": "y", "source": {"kind": "ftp"}}) as response:
            assert response.status == 422
        async with session.get(base) as response:
            assert source_table in [c["name"] for c in await response.json()]
        async with session.post(f"{base}/{source_table}/run?wait=true") as response:
            assert response.status == 200, await response.text()
        await rows_become(pool, storage_name, ("id", "v"), [(1, "a"), (2, "b")])
        async with session.get(f"{base}/{source_table}/batches") as response:
            batches = await response.json()
        assert [(b["status"], b["rows"]) for b in batches] == [("sent", 2)]
        async with session.delete(f"{base}/{source_table}") as response:
            assert response.status in (200, 204)
        async with session.get(f"{base}/{source_table}") as response:
            assert response.status == 404
