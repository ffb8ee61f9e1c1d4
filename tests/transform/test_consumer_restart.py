"""A consumer whose fetch routine died (aio-libs/aiokafka#796) is replaced: its partitions never stall."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from headrace.catalog import Storage
from headrace.kafka import Topics, ensure_topics
from tests.eventually import eventually
from tests.transform.conftest import TransformLab, json_values, lab_for
from transform import metrics
from transform.sink import StorageSink


async def test_a_consumer_that_stopped_fetching_is_replaced_and_its_events_are_written_once(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path, storage_name: str
) -> None:
    lab = lab_for(isolated_env, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    storage = await lab.storage(storage_name)
    sink = StorageSink(lab.settings)
    await sink.start()
    try:
        await lab.produce(storage_name, json_values([{"n": i} for i in range(10)]))
        await eventually(lambda: _count_is(lab, storage, 10), what="the first events")
        stalled = sink.consumer
        assert stalled is not None
        restarts = metrics.CONSUMER_RESTARTS._value.get()
        # What the assertion in aiokafka's fetch routine does to it, short of reproducing the race: it ends.
        stalled._fetcher._fetch_task.cancel()
        await lab.produce(storage_name, json_values([{"n": i} for i in range(10, 25)]))
        await eventually(lambda: _count_is(lab, storage, 25), what="the events after the fetch routine died")
        assert sink.consumer is not stalled
        assert metrics.CONSUMER_RESTARTS._value.get() == restarts + 1
        assert await lab.exactly_once(storage) == (25, 25)
        assert sorted(r["n"] for r in await lab.rows(storage)) == list(range(25))
    finally:
        await sink.stop()


async def _count_is(lab: TransformLab, storage: Storage, expected: int) -> bool:
    return await lab.count(storage) == expected
