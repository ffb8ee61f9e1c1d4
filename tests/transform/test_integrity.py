"""Exactly once, in order, never stalled: batch order, the event-id window, and writes Postgres refuses."""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import orjson

from headrace.events import batch_end_headers, batch_headers, event_key
from headrace.kafka import Topics, ensure_topics
from tests.eventually import eventually
from tests.transform.conftest import TransformLab, json_values, lab_for
from tests.transform.test_load_modes import read_topic


def batch(batch_id: str, records: list[dict], mode: str, primary_key: list[str] | None = None) -> tuple:
    """A collector's batch as it goes to Kafka: rows keyed by primary key with batch:index ids, and its end marker."""
    headers = [
        [*batch_headers(batch_id, mode), ("hr-event-id", f"{batch_id}:{i}".encode())] for i in range(len(records))
    ]
    keys = [event_key(primary_key, r) for r in records] if primary_key else None
    return json_values(records), keys, headers, batch_end_headers(batch_id, len(records), mode)


async def batch_states(pool: asyncpg.Pool, storage) -> dict[str, tuple[str, str | None]]:
    rows = await pool.fetch("SELECT batch_id, state, reason FROM headrace.batches WHERE storage_id = $1", storage.id)
    return {r["batch_id"]: (r["state"], r["reason"]) for r in rows}


async def test_two_collector_batches_completing_in_one_write_cycle_apply_in_stream_order(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path
) -> None:
    """The seen bug: both batches completed in one poll and were applied sorted by batch id, old over new."""
    lab = lab_for(isolated_env, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    merged = await lab.storage("ordered_merge", load_mode="merge", primary_key=["id"])
    replaced = await lab.storage("ordered_replace", load_mode="replace")
    # The older batch's id sorts after the newer one's, as random batch ids do half the time.
    snapshot = [{"id": i, "v": "old", "deleted": False} for i in range(100)]
    changes = (
        [{"id": i, "v": "updated", "deleted": False} for i in range(10)]
        + [{"id": i, "_op": "d"} for i in range(10, 15)]
        + [{"id": i, "v": "new", "deleted": False} for i in range(100, 110)]
    )
    for batch_id, records in (("z-first", snapshot), ("a-second", changes)):
        values, keys, headers, end = batch(batch_id, records, "merge", ["id"])
        await lab.produce("ordered_merge", values, keys=keys, headers=headers)
        await lab.produce("ordered_merge", [b"{}"], headers=[end], partition=0)
    for batch_id, snap in (("z-first", 1), ("a-second", 2)):
        values, _, headers, end = batch(batch_id, [{"k": i, "snap": snap} for i in range(20 - snap)], "replace")
        await lab.produce("ordered_replace", values, headers=headers)
        await lab.produce("ordered_replace", [b"{}"], headers=[end], partition=0)
    worker = lab.worker()  # started after both batches are in the topics, so it reads them together
    try:
        await worker.ready()
        await eventually(lambda: lab.positions_done("ordered_merge", 100 + 25 + 2), what="both merge batches")
        await eventually(lambda: lab.positions_done("ordered_replace", 19 + 18 + 2), what="both replace batches")
        rows = {r["id"]: r["v"] for r in await lab.rows(merged)}
        expected = {i: "updated" for i in range(10)} | {i: "old" for i in range(15, 100)}
        assert rows == expected | {i: "new" for i in range(100, 110)}
        assert {r["snap"] for r in await lab.rows(replaced)} == {2}
        assert await lab.count(replaced) == 18
        states = await batch_states(pool, merged)
        assert states == {"z-first": ("applied", None), "a-second": ("applied", None)}
        order = await pool.fetch(
            "SELECT batch_id FROM headrace.batches WHERE storage_id = $1 ORDER BY marker_offset", merged.id
        )
        assert [r["batch_id"] for r in order] == ["z-first", "a-second"]
    finally:
        worker.stop()


async def test_an_event_id_is_written_once_whichever_partition_each_copy_took(
    lab: TransformLab, storage_name: str
) -> None:
    appended = await lab.storage(storage_name)
    records = [{"n": i} for i in range(20)]
    headers = [[("hr-event-id", f"push-{storage_name}:{i}".encode())] for i in range(20)]
    await lab.produce(storage_name, json_values(records), headers=headers, partition=0)
    # The client retried: the same ids again, landing on another partition.
    await lab.produce(storage_name, json_values(records), headers=headers, partition=2)
    await eventually(lambda: lab.positions_done(storage_name, 40), what="both copies read")
    assert sorted(r["n"] for r in await lab.rows(appended)) == list(range(20))
    # Merge: a retried old event must not overwrite the newer one that came between.
    merged = await lab.storage(storage_name + "_m", load_mode="merge", primary_key=["k"])
    sequence = [("old", {"k": 1, "v": "old"}), ("new", {"k": 1, "v": "new"}), ("old", {"k": 1, "v": "old"})]
    for event_id, record in sequence:
        await lab.produce(
            merged.name,
            json_values([record]),
            keys=[event_key(["k"], record)],
            headers=[[("hr-event-id", f"{storage_name}-{event_id}".encode())]],
        )
    await eventually(lambda: lab.positions_done(merged.name, 3), what="the merge events")
    assert [(r["k"], r["v"]) for r in await lab.rows(merged)] == [(1, "new")]
    metrics = await lab.workers[0].metrics()
    dropped = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("headrace_transform_duplicates_dropped_total{") and storage_name in line
    ]
    assert sum(dropped) == 21


async def test_writes_postgres_refuses_are_set_aside_and_the_partition_moves_on(
    lab: TransformLab, storage_name: str
) -> None:
    """One event per failure class that used to be retried forever; each is kept with its reason, the rest land."""
    merged = await lab.storage(storage_name, load_mode="merge", primary_key=["id"])
    await lab.produce(storage_name, json_values([{"id": 1, "v": "a"}]), partition=1)
    await eventually(lambda: lab.positions_done(storage_name, 1), what="the key column typed integer")
    events = [
        {"id": "abc", "_op": "d"},  # a delete whose key has the wrong type
        {"id": {"x": 1}, "v": "object key"},  # an object as a key value
        {"id": 2, "v": "b"},
    ]
    # All on one partition, so any of them would hold the others back.
    await lab.produce(storage_name, json_values(events), partition=1)
    await eventually(lambda: lab.positions_done(storage_name, 4), what="the partition moving on")
    assert sorted((r["id"], r["v"]) for r in await lab.rows(merged)) == [(1, "a"), (2, "b")]
    long_keyed = await lab.storage(storage_name + "_long", load_mode="merge", primary_key=["id"])
    long_key = secrets.token_hex(10_000)  # past a btree entry's limit, even compressed
    events = [{"id": "a", "v": "a"}, {"id": long_key, "v": "long key"}, {"id": "b", "v": "b"}]
    await lab.produce(long_keyed.name, json_values(events), partition=3)
    await eventually(lambda: lab.positions_done(long_keyed.name, 3), what="past the long key")
    assert sorted((r["id"], r["v"]) for r in await lab.rows(long_keyed)) == [("a", "a"), ("b", "b")]
    reasons = [
        r["reason"]
        for r in await lab.pool.fetch(
            "SELECT reason FROM headrace.rejected_rows WHERE storage_id = ANY($1::uuid[]) ORDER BY id",
            [merged.id, long_keyed.id],
        )
    ]
    assert len(reasons) == 3, reasons
    assert reasons[0].startswith("merge delete: key field 'id'")
    assert "object or array" in reasons[1]
    assert reasons[2].startswith("write refused") and "index row" in reasons[2]

    # Nesting deeper than a jsonb value may hold: not even a rejected row can keep it, so it is a dead letter.
    deep = await lab.storage(storage_name + "_deep")
    # orjson reads 1024 levels but writes only 254, and the jsonb codec writes through it.
    deep_value = b'{"n": 2, "deep": ' + b'{"d": ' * 300 + b"1" + b"}" * 301
    values = [orjson.dumps({"n": 1}), deep_value]
    values.append(orjson.dumps({"n": 3}))
    await lab.produce(deep.name, values, partition=0)
    await eventually(lambda: lab.positions_done(deep.name, 3), what="past the deep event")
    assert sorted(r["n"] for r in await lab.rows(deep)) == [1, 3]
    dead = [m for m in await read_topic(lab, lab.topics.dead_letter, 10_000, timeout_ms=3000) if m.value == values[1]]
    assert len(dead) == 1 and dict(dead[0].headers)["hr-reason"].decode().startswith("write refused")


async def test_an_append_batch_on_a_merge_storage_that_breaks_the_key_fails_alone(
    lab: TransformLab, storage_name: str
) -> None:
    merged = await lab.storage(storage_name, load_mode="merge", primary_key=["id"])
    await lab.produce(storage_name, json_values([{"id": 1, "v": "pushed"}]), keys=[b"[1]"])
    await eventually(lambda: lab.positions_done(storage_name, 1), what="the first row")
    values, keys, headers, end = batch("dup", [{"id": 1, "v": "again"}, {"id": 7, "v": "x"}], "append", ["id"])
    await lab.produce(storage_name, values, keys=keys, headers=headers)
    await lab.produce(storage_name, [b"{}"], headers=[end], partition=0)
    await lab.produce(storage_name, json_values([{"id": 3, "v": "after"}]), keys=[b"[3]"])
    await eventually(lambda: lab.positions_done(storage_name, 5), what="past the batch")
    assert sorted((r["id"], r["v"]) for r in await lab.rows(merged)) == [(1, "pushed"), (3, "after")]
    state, reason = (await batch_states(lab.pool, merged))["dup"]
    assert state == "failed" and "applying the batch failed" in reason and "duplicate key" in reason


async def test_an_incomplete_batch_fails_after_the_timeout_and_frees_the_batches_behind_it(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path
) -> None:
    lab = lab_for(isolated_env | {"HEADRACE_BATCH_COMPLETE_TIMEOUT_SECONDS": "2"}, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    storage = await lab.storage("timed", load_mode="replace")
    values, _, headers, _ = batch("short", [{"k": i} for i in range(3)], "replace")
    await lab.produce("timed", values, headers=headers)
    await lab.produce("timed", [b"{}"], headers=[batch_end_headers("short", 5, "replace")], partition=0)
    values, _, headers, end = batch("next", [{"k": i, "ok": True} for i in range(4)], "replace")
    await lab.produce("timed", values, headers=headers)
    await lab.produce("timed", [b"{}"], headers=[end], partition=0)
    worker = lab.worker()
    try:
        await worker.ready()

        async def next_applied() -> bool:
            return (await batch_states(pool, storage)).get("next", ("",))[0] == "applied"

        await eventually(next_applied, what="the batch behind the short one applied")
        state, reason = (await batch_states(pool, storage))["short"]
        assert state == "failed" and reason.startswith("incomplete: 3 of 5 row events")
        assert sorted(r["k"] for r in await lab.rows(storage)) == [0, 1, 2, 3]
    finally:
        worker.stop()


async def test_postgres_connections_lost_mid_load_are_waited_out(
    isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path
) -> None:
    lab = lab_for(isolated_env, pool, work_dir)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    storage = await lab.storage("severed")
    total = 30_000
    await lab.produce("severed", [orjson.dumps({"n": i}) for i in range(total)])
    worker = lab.worker()
    try:
        await worker.ready()
        for fraction in (5, 2):
            await eventually(lambda f=fraction: _at_least(lab, storage, total // f), what="writing under way")
            await pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'headrace-transform'"
                " AND datname = current_database()"
            )
        await eventually(lambda: lab.positions_done("severed", total), timeout=120, what="the load finished")
        assert await lab.exactly_once(storage) == (total, total)
        assert await pool.fetchval(f"SELECT count(DISTINCT n) FROM {storage.qualified_table}") == total
    finally:
        worker.stop()


async def _at_least(lab: TransformLab, storage, count: int) -> bool:
    return await lab.count(storage) >= count
