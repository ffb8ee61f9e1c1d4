"""A stop lets transform write what the embedded broker holds, within a bound, and says what it could not keep."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from tests.platform.helpers import LocalPlatform, embedded_env, push

Launch = Callable[[dict[str, str], Path], LocalPlatform]


def _frozen_with_events(platform: LocalPlatform, count: int) -> tuple[str, int, set[str]]:
    """A new storage with `count` events acknowledged while transform is frozen: in the broker, surely not written."""
    storage = f"stop_{uuid.uuid4().hex[:8]}"
    url = platform.cli_json("storage", "create", storage)["push_url"]
    transform_pid = platform.status()["services"]["transform"]["pid"]
    os.kill(transform_pid, signal.SIGSTOP)
    ids = {f"{storage}-{i}" for i in range(count)}
    push(url, [{"_id": event_id} for event_id in sorted(ids)])
    return storage, transform_pid, ids


def test_a_stop_waits_for_transform_to_write_what_the_broker_holds(
    data_dir: Path, launched: Launch, database_url: str
) -> None:
    # The embedded broker, with the session's database: the storage can be read after the platform stopped.
    env = embedded_env(HEADRACE_DATABASE_URL=database_url)
    platform = launched(env, data_dir)
    storage, transform_pid, ids = _frozen_with_events(platform, 30)

    platform.up.process.send_signal(signal.SIGTERM)
    assert platform.up.wait_for_line(lambda line: line.startswith("letting transform write"), 60)
    os.kill(transform_pid, signal.SIGCONT)
    assert platform.up.process.wait(timeout=90) == 0
    assert "transform has written every event the broker held" in platform.up.lines
    assert sorted(_stored_ids(database_url, storage)) == sorted(ids)


def _stored_ids(database_url: str, storage: str) -> list[str]:
    """The storage's event ids, read from Postgres: the platform is stopped, so no service (nor CLI) can tell."""

    async def read() -> list[str]:
        conn = await asyncpg.connect(database_url)
        try:
            return [r["_event_id"] for r in await conn.fetch(f'SELECT _event_id FROM storage."{storage}"')]
        finally:
            await conn.close()

    return asyncio.run(read())


def test_a_stop_past_its_bound_says_how_many_events_it_loses(
    data_dir: Path, launched: Launch, database_url: str
) -> None:
    env = embedded_env(HEADRACE_DATABASE_URL=database_url, HEADRACE_STOP_DRAIN_SECONDS="1")
    platform = launched(env, data_dir)
    _, transform_pid, ids = _frozen_with_events(platform, 7)

    platform.up.process.send_signal(signal.SIGTERM)
    lost = platform.up.wait_for_line(lambda line: "not yet written are lost" in line, 60)
    os.kill(transform_pid, signal.SIGCONT)  # so that it can answer the SIGTERM that follows
    assert lost == f"{len(ids)} acknowledged events not yet written are lost with the in-memory broker"
    assert platform.up.process.wait(timeout=90) == 0
