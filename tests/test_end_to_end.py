"""One event end to end: create a storage, push the seed's curl example, read the row back, all through the CLI."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from headrace.query import ROW_SYSTEM_COLUMNS
from tests.conftest import ADMIN, RunningPlatform
from tests.eventually import eventually


async def test_pushed_event_becomes_a_row(platform: RunningPlatform, storage_name: str) -> None:
    created = platform.cli_json("storage", "create", storage_name)
    assert {"id", "name", "push_url"} <= set(created)
    assert created["name"] == storage_name

    # Exactly the seed's example: curl -d '{"key":"msg1", "key2":"msg2"}' -H "Content-Type: application/json"
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(
            created["push_url"], data=b'{"key":"msg1", "key2":"msg2"}', headers={"Content-Type": "application/json"}
        ) as response:
            assert 200 <= response.status < 300, await response.text()
            assert await response.json() == {"accepted": 1}

    async def queried() -> list:
        return await asyncio.to_thread(platform.cli_json, "storage", "query", storage_name)

    rows = await eventually(queried, what="the pushed event as a row")
    assert len(rows) == 1
    row = rows[0]
    assert row["key"] == "msg1"
    assert row["key2"] == "msg2"
    assert {"_event_id", "_inserted_at", "_received_at"} <= set(row)
    assert {k for k in row if k.startswith("_")} == set(ROW_SYSTEM_COLUMNS)


def test_status_reports_every_service_ready(platform: RunningPlatform) -> None:
    result = platform.cli("status", "--json")
    services = orjson.loads(result.stdout)["services"]
    assert set(services) == {"ingest", "schema-registry", "transform", "exporter", "console"}
    assert all(s["ready"] for s in services.values())
    for info in services.values():
        assert info["url"].startswith("http://")


async def test_every_service_serves_health_readiness_and_metrics(platform: RunningPlatform) -> None:
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        for service in ("ingest", "schema-registry", "transform", "exporter"):
            base = platform.settings.service_url(service)
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["checks"] == {"postgres": True, "kafka": True}
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                assert "headrace_http_requests_total" in await response.text()
