"""Two worker processes share the partitions; a worker SIGKILLed mid-load and restarted: nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from headrace.events import event_key
from headrace.kafka import Topics, ensure_topics
from tests.eventually import eventually
from tests.transform.conftest import TransformLab, lab_for

EVENTS = 100_000
MERGE_KEYS = 20_000


def merge_events() -> tuple[list[bytes], list[bytes], dict[int, dict]]:
    """Updates and deletes over MERGE_KEYS keys, and the state they leave."""
    values, keys, expected = [], [], {}
    for i in range(EVENTS):
        key = (i * 7919) % MERGE_KEYS
        if i % 11 == 5:
            record: dict = {"id": key, "_op": "d"}
            expected.pop(key, None)
        else:
            record = {"id": key, "seq": i, "label": f"v{i % 13}"}
            expected[key] = {"seq": i, "label": f"v{i % 13}"}
        values.append(orjson.dumps(record))
        keys.append(event_key(["id"], record))
    return values, keys, expected


async def test_two_workers_share_the_load_exactly_once(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path
) -> None:
    lab = lab_for(isolated_env, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    appended = await lab.storage("scale_append")
    merged = await lab.storage("scale_merge", load_mode="merge", primary_key=["id"])
    await lab.produce("scale_append", [orjson.dumps({"n": i, "label": f"v{i % 13}"}) for i in range(EVENTS)])
    values, keys, expected = merge_events()
    await lab.produce("scale_merge", values, keys=keys)
    first = lab.worker()
    try:
        await first.ready()
        # The second worker joins while the first is loading: partitions move, nothing may be lost or doubled.
        await eventually(lambda: _written(lab, appended, EVENTS // 10), what="the first worker writing")
        second = lab.worker()
        await second.ready()
        await eventually(lambda: lab.positions_done("scale_append", EVENTS), timeout=120, what="append loaded")
        total = await lab.consumed("scale_append")
        await eventually(lambda: lab.positions_done("scale_merge", EVENTS), timeout=120, what="merge loaded")
        assert await lab.exactly_once(appended) == (total, total)
        assert await pool.fetchval(f"SELECT count(DISTINCT n) FROM {appended.qualified_table}") == EVENTS
        rows = await lab.rows(merged)
        assert {r["id"]: {"seq": r["seq"], "label": r["label"]} for r in rows} == expected
        assert len(rows) == len(expected)
        # Both workers took part: the first wrote, and the second was given partitions (a lag gauge per partition).
        assert _rows_written(await first.metrics()) > 0

        async def second_has_partitions() -> bool:
            return "headrace_transform_consumer_lag{" in await second.metrics()

        await eventually(second_has_partitions, timeout=30, what="the second worker holding partitions")
    finally:
        for worker in lab.workers:
            worker.stop()


def _rows_written(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("headrace_transform_rows_written_total{")
    )


async def _written(lab: TransformLab, storage, at_least: int) -> bool:
    return await lab.count(storage) >= at_least


async def test_sigkill_mid_load_loses_and_duplicates_nothing(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path
) -> None:
    lab = lab_for(isolated_env, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    storage = await lab.storage("killed")
    await lab.produce("killed", [orjson.dumps({"n": i, "label": f"v{i % 13}"}) for i in range(EVENTS)])
    worker = lab.worker()
    try:
        await worker.ready()
        await eventually(lambda: _written(lab, storage, EVENTS // 4), what="a quarter written")
        worker.kill()
        killed_at = await lab.count(storage)
        assert killed_at < EVENTS, "the load finished before the kill; make EVENTS larger"
        restarted = lab.worker()
        await restarted.ready()
        await eventually(lambda: lab.positions_done("killed", EVENTS), timeout=120, what="the load finished")
        total = await lab.consumed("killed")  # EVENTS, or more if a produce retry wrote some event twice
        # Every message in the topic is exactly one row, and every event produced is there.
        assert await lab.exactly_once(storage) == (total, total)
        assert await pool.fetchval(f"SELECT count(DISTINCT n) FROM {storage.qualified_table}") == EVENTS
    finally:
        for w in lab.workers:
            w.stop()
