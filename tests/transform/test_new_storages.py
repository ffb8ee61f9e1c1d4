"""New storages are taken up as soon as they are created: heard over Postgres NOTIFY, every first event written once."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.kafka import Topics, ensure_topics
from headrace.settings import Settings
from tests.eventually import eventually
from tests.transform.conftest import json_values, lab_for
from transform.sink import StorageSink
from transform.storage_creations import StorageCreations


async def test_creations_are_heard_and_heard_again_after_the_listening_session_is_killed(
    settings: Settings, pool: asyncpg.Pool, storage_name: str
) -> None:
    heard: list[str] = []
    creations = StorageCreations(settings, heard.append, reconnect_seconds=0.1)
    await creations.start()
    try:
        await eventually(lambda: creations.listening_pid, what="the listener to listen")
        await Catalog(pool).create(f"{storage_name}_a")
        await eventually(lambda: f"{storage_name}_a" in heard, what="the first creation heard")
        killed = creations.listening_pid
        await pool.execute("SELECT pg_terminate_backend($1)", killed)
        await eventually(lambda: creations.listening_pid not in (None, killed), what="the listener back")
        await Catalog(pool).create(f"{storage_name}_b")
        await eventually(lambda: f"{storage_name}_b" in heard, what="a creation heard after the reconnection")
    finally:
        await creations.stop()


async def test_storages_created_while_the_worker_runs_get_every_event_once(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path, storage_name: str
) -> None:
    lab = lab_for(isolated_env, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    first = await lab.storage(f"{storage_name}_0")
    sink = StorageSink(lab.settings)
    await sink.start()
    try:
        await lab.produce(first.name, json_values([{"n": 0}]))
        await eventually(lambda: lab.count(first), what="the first storage's event")
        # Created and pushed to at once, while the worker runs: however the worker learns of them (the creation's
        # notice, tested above, or its periodic metadata refresh), the rebalance must lose and repeat nothing.
        created = [await lab.storage(f"{storage_name}_{i}") for i in range(1, 4)]
        for storage in created:
            await lab.produce(storage.name, json_values([{"n": i} for i in range(5)]))
        for storage in created:

            async def written(storage: Storage = storage) -> bool:
                return await lab.count(storage) == 5

            await eventually(written, what=f"{storage.name}'s events")
            assert await lab.exactly_once(storage) == (5, 5)
    finally:
        await sink.stop()
