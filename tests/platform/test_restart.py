"""`headrace up` on embedded defaults stopped and started again between two loads: every event is stored once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.platform.helpers import LocalPlatform, embedded_env

Launch = Callable[[dict[str, str], Path], LocalPlatform]


def _load(url: str, ids: list[str]) -> None:
    """One push per event, as an application sends them, each acknowledged."""
    with httpx.Client(timeout=30) as client:
        for event_id in ids:
            response = client.post(url, json={"_id": event_id, "load": event_id.split("-")[0]})
            assert response.status_code == 200, response.text


def test_a_restart_between_two_loads_keeps_every_event_once(data_dir: Path, launched: Launch) -> None:
    # No HEADRACE_DATABASE_URL, no HEADRACE_KAFKA_BOOTSTRAP: the embedded Postgres keeps its data in the data dir,
    # the embedded broker starts empty each time, and its topics with it.
    env = embedded_env()
    storage = f"restart_{uuid.uuid4().hex[:8]}"
    first = [f"one-{i}" for i in range(50)]
    second = [f"two-{i}" for i in range(50)]

    platform = launched(env, data_dir)
    url = platform.cli_json("storage", "create", storage)["push_url"]
    _load(url, first)
    platform.wait_stored(storage, set(first))
    assert platform.stop() == 0

    platform = launched(env, data_dir)
    _load(url, second)
    stored = platform.wait_stored(storage, set(first) | set(second))
    assert sorted(stored) == sorted(first + second)  # each exactly once
    assert platform.stop() == 0
