"""Storages and their models through the running platform: inference, widening, new fields, lock, rejected rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN, RunningPlatform
from tests.eventually import eventually


async def shown_when(probe: Callable[[], Any], holds: Callable[[Any], bool], what: str) -> Any:
    """The value of `probe` (a CLI call, run in a thread) once `holds` says so."""

    async def check() -> Any:
        value = await asyncio.to_thread(probe)
        return value if holds(value) else None

    return await eventually(check, timeout=20, what=what)


async def push(url: str, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.json(content_type=None)


def types_of(shown: dict) -> dict[str, str]:
    return {c["name"]: c["type"] for c in shown["columns"]}


@pytest.fixture
def created(platform: RunningPlatform, storage_name: str) -> dict:
    return platform.cli_json("storage", "create", storage_name)


async def test_types_are_inferred_and_widen_keeping_old_values(platform: RunningPlatform, created: dict) -> None:
    name, url = created["name"], created["push_url"]
    assert (await push(url, b'{"d": "2024-01-05T10:00:00Z", "n": 1, "s": "a"}'))[0] == 200
    shown = await shown_when(
        lambda: platform.cli_json("storage", "show", name), lambda s: len(s["columns"]) == 3, "3 columns"
    )
    assert types_of(shown) == {"d": "datetime", "n": "integer", "s": "string"}

    assert (await push(url, b'{"d": "not a date", "n": 1.5}'))[0] == 200
    shown = await shown_when(
        lambda: platform.cli_json("storage", "show", name), lambda s: types_of(s).get("d") == "string", "d widened"
    )
    assert types_of(shown) == {"d": "string", "n": "float", "s": "string"}
    rows = await shown_when(lambda: platform.cli_json("storage", "query", name), lambda r: len(r) == 2, "2 rows")
    first, second = rows
    assert first["d"] == "2024-01-05T10:00:00Z" and first["n"] == 1 and first["s"] == "a"
    assert second["d"] == "not a date" and second["n"] == 1.5 and second["s"] is None

    assert (await push(url, b'{"x": true}'))[0] == 200
    rows = await shown_when(lambda: platform.cli_json("storage", "query", name), lambda r: len(r) == 3, "3 rows")
    assert types_of(platform.cli_json("storage", "show", name))["x"] == "boolean"
    assert [r["x"] for r in rows] == [None, None, True]

    history = platform.cli_json("storage", "history", name)
    assert [v["version"] for v in history] == [0, 1, 2, 3]
    assert history[2]["change"]["widened"] == [
        {"column": "d", "from": "datetime", "to": "string"},
        {"column": "n", "from": "integer", "to": "float"},
    ]


async def test_a_locked_model_refuses_type_changes_but_takes_new_columns(
    platform: RunningPlatform, created: dict
) -> None:
    name, url = created["name"], created["push_url"]
    assert (await push(url, b'{"n": 1}'))[0] == 200
    await shown_when(lambda: platform.cli_json("storage", "show", name), lambda s: len(s["columns"]) == 1, "a column")
    assert platform.cli_json("storage", "lock", name)["locked"] is True

    status, answer = await push(url, b'{"n": "abc"}')
    if status == 422:  # the push path saw the misfit: the caller is told, nothing was written
        assert "n" in answer["error"]
    else:  # it went through Kafka: transform keeps it aside with the reason
        assert status == 200
        rejected = await shown_when(
            lambda: platform.cli_json("storage", "rejected", name), lambda r: len(r) == 1, "the rejected row"
        )
        assert rejected[0]["payload"] == {"n": "abc"}
        assert "'n'" in rejected[0]["reason"] and "integer" in rejected[0]["reason"]

    assert (await push(url, b'{"y": 5}'))[0] == 200
    rows = await shown_when(lambda: platform.cli_json("storage", "query", name), lambda r: len(r) == 2, "2 rows")
    assert [(r["n"], r.get("y")) for r in rows] == [(1, None), (None, 5)]
    assert types_of(platform.cli_json("storage", "show", name)) == {"n": "integer", "y": "integer"}

    if status != 422:
        platform.cli_json("storage", "unlock", name)
        assert platform.cli_json("storage", "replay-rejected", name) == {"replayed": 1}
        rows = await shown_when(lambda: platform.cli_json("storage", "query", name), lambda r: len(r) == 3, "3 rows")
        assert types_of(platform.cli_json("storage", "show", name))["n"] == "string"
        assert sorted(str(r["n"]) for r in rows) == ["1", "None", "abc"]
        assert platform.cli_json("storage", "rejected", name) == []


async def test_hostile_keys_become_ordinary_columns(platform: RunningPlatform, created: dict) -> None:
    name, url = created["name"], created["push_url"]
    body = b'{"\\"; DROP TABLE x; --": 1, "_private": "p", "": "empty"}'
    assert (await push(url, body))[0] == 200
    rows = await shown_when(lambda: platform.cli_json("storage", "query", name), lambda r: len(r) == 1, "1 rows")
    assert rows[0]['"; DROP TABLE x; --'] == 1
    assert rows[0]["_private"] == "p" and rows[0][""] == "empty"


async def test_the_management_api(platform: RunningPlatform, storage_name: str) -> None:
    base = platform.settings.service_url("ingest")
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(f"{base}/api/storages", json={"name": storage_name}) as response:
            assert response.status == 201
            created = await response.json()
        async with session.post(f"{base}/api/storages", json={"name": storage_name}) as response:
            assert response.status == 409
        async with session.post(f"{base}/api/storages/{storage_name}/lock") as response:
            assert (await response.json())["locked"] is True
        async with session.get(f"{base}/api/storages/{storage_name}") as response:
            assert (await response.json())["locked"] is True
        async with session.post(f"{base}/api/storages/{storage_name}/unlock") as response:
            assert (await response.json())["locked"] is False
        async with session.post(f"{base}/api/storages/{storage_name}/token") as response:
            rotated = await response.json()
        async with session.get(f"{base}/api/storages/no-such-storage") as response:
            assert response.status == 404
    # Rotated through this ingest instance, the old push URL is dead at once and the new one works.
    assert (await push(created["push_url"], b'{"a": 1}'))[0] == 404
    assert (await push(rotated["push_url"], b'{"a": 1}'))[0] == 200
