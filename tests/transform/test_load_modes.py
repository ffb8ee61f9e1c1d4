"""Each load mode through a real worker, broker and Postgres: append, merge (deletes too), replace; dead letters."""

from __future__ import annotations

import uuid

import orjson
from aiokafka import AIOKafkaConsumer

from headrace.catalog import Catalog
from headrace.events import batch_end_headers, batch_headers, event_key
from tests.eventually import eventually
from tests.transform.conftest import TransformLab, json_values


async def read_topic(lab: TransformLab, topic: str, count: int, timeout_ms: int = 20000) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=lab.settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        found: list = []
        import time

        deadline = time.monotonic() + timeout_ms / 1000
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                found.extend(messages)
        return found
    finally:
        await consumer.stop()


async def test_append_writes_every_event_with_system_columns(lab: TransformLab, storage_name: str) -> None:
    storage = await lab.storage(storage_name)
    records = [{"n": i, "name": f"user {i}", "day": "2021-04-08"} for i in range(40)]
    await lab.produce(storage_name, json_values(records))
    await eventually(lambda: lab.positions_done(storage_name, 40), what="40 events written")
    rows = await lab.rows(storage)
    assert sorted(r["n"] for r in rows) == list(range(40))
    for row in rows:
        assert row["_event_id"] and row["_inserted_at"] and row["_received_at"]
        assert row["_source_partition"] == row["n"] % 4
        assert row["_xid"] is not None  # the writing transaction, what exports read by
        assert row["day"].isoformat() == "2021-04-08"


async def test_merge_upserts_by_key_keeps_the_last_and_deletes(lab: TransformLab, storage_name: str) -> None:
    storage = await lab.storage(storage_name, load_mode="merge", primary_key=["id"])
    events = [
        {"id": 1, "v": "a"},
        {"id": 2, "v": "b"},
        {"id": 3, "v": "c"},
        {"id": 1, "v": "a2"},  # repeated inside one batch: the last wins
        {"id": 2, "_op": "d"},  # a delete by `_op`
        {"id": 4, "v": "d"},
        {"v": "no key"},  # rejected: the key is missing
    ]
    keys = [event_key(["id"], e) for e in events]
    keys[-1] = b"nokey"
    await lab.produce(storage_name, json_values(events), keys=keys)
    await eventually(lambda: lab.positions_done(storage_name, len(events)), what="merge batch written")
    assert {r["id"]: r["v"] for r in await lab.rows(storage)} == {1: "a2", 3: "c", 4: "d"}
    # A tombstone on the keyed topic deletes; a later event updates.
    await lab.produce(
        storage_name,
        [None, orjson.dumps({"id": 4, "v": "d2"})],
        keys=[event_key(["id"], {"id": 3}), event_key(["id"], {"id": 4})],
    )
    await eventually(lambda: lab.positions_done(storage_name, len(events) + 2), what="tombstone written")
    assert {r["id"]: r["v"] for r in await lab.rows(storage)} == {1: "a2", 4: "d2"}
    rejected = await lab.pool.fetch(
        "SELECT reason, payload FROM headrace.rejected_rows WHERE storage_id = $1", storage.id
    )
    assert [r["reason"] for r in rejected] == ["merge: primary key field 'id' is missing or null"]
    assert rejected[0]["payload"] == {"v": "no key"}
    indexes = await lab.pool.fetch(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'storage' AND tablename = $1", storage.table_name
    )
    assert any("UNIQUE" in r["indexdef"] for r in indexes)


async def test_replace_swaps_in_complete_batches_only(lab: TransformLab, storage_name: str) -> None:
    storage = await lab.storage(storage_name, load_mode="replace")
    first = [{"k": i, "snap": 1} for i in range(10)]
    await lab.produce(storage_name, json_values(first), headers=[batch_headers("b1") for _ in first])
    await lab.produce(storage_name, [b"{}"], headers=[batch_end_headers("b1", 10)], partition=0)
    await eventually(lambda: _equals(lab, storage, 10), what="batch 1 swapped in")
    # Batch 2: rows arrive, the end marker announces more than arrived: nothing is replaced.
    second = [{"k": i, "snap": 2, "extra": "x"} for i in range(5)]
    await lab.produce(storage_name, json_values(second), headers=[batch_headers("b2") for _ in second])
    await lab.produce(storage_name, [b"{}"], headers=[batch_end_headers("b2", 6)], partition=1)
    await eventually(lambda: lab.positions_done(storage_name, 10 + 1 + 5 + 1), what="batch 2 staged")
    assert {r["snap"] for r in await lab.rows(storage)} == {1}
    # The missing row arrives: batch 2 is complete and becomes the storage's contents, atomically.
    await lab.produce(storage_name, json_values([{"k": 5, "snap": 2, "extra": "y"}]), headers=[batch_headers("b2")])
    await eventually(lambda: _all_snap(lab, storage, 2), what="batch 2 swapped in")
    rows = await lab.rows(storage)
    assert sorted(r["k"] for r in rows) == list(range(6))
    assert len({r["_inserted_at"] for r in rows}) == 1
    state = await lab.pool.fetch(
        "SELECT batch_id, state FROM headrace.batches WHERE storage_id = $1 ORDER BY batch_id", storage.id
    )
    assert [(r["batch_id"], r["state"]) for r in state] == [("b1", "applied"), ("b2", "applied")]


async def _equals(lab: TransformLab, storage, count: int) -> bool:
    return await lab.count(storage) == count


async def _all_snap(lab: TransformLab, storage, snap: int) -> bool:
    rows = await lab.rows(storage)
    return bool(rows) and all(r["snap"] == snap for r in rows)


async def test_poison_event_goes_to_dead_letters_and_the_partition_moves_on(
    lab: TransformLab, storage_name: str
) -> None:
    storage = await lab.storage(storage_name)
    poison = b"\xff\xfe not json " + uuid.uuid4().hex.encode()
    values = [orjson.dumps({"n": 1}), poison, orjson.dumps({"n": 2}), b"[1, 2]", orjson.dumps({"n": 3})]
    await lab.produce(storage_name, values, partition=2)
    await eventually(lambda: lab.positions_done(storage_name, 5), what="the partition moved past the poison")
    assert sorted(r["n"] for r in await lab.rows(storage)) == [1, 2, 3]
    dead = [
        m
        for m in await read_topic(lab, lab.topics.dead_letter, 1000, timeout_ms=3000)
        if m.value in (poison, b"[1, 2]")
    ]
    reasons = {m.value: dict(m.headers)["hr-reason"].decode() for m in dead}
    assert reasons[poison].startswith("not JSON")
    assert reasons[b"[1, 2]"] == "not a JSON object but list"
    assert dict(dead[0].headers)["hr-source"].decode().startswith(lab.topics.ingest(storage_name) + ":2:")
    # Counted by the storage of the topic they came from (what the dead-letter alert names), and the storage's lag
    # is shown by storage too.
    text = await lab.workers[0].metrics()
    mine = [line for line in text.splitlines() if f'storage="{storage_name}"' in line]
    dead_counts = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in mine
        if line.startswith("headrace_transform_dead_letters_total{")
    }
    assert dead_counts == {"not JSON": 1, "not a JSON object but list": 1}
    assert any(line.startswith("headrace_transform_consumer_lag{") for line in mine)


async def test_a_value_postgres_refuses_everywhere_is_dead_lettered_and_the_rest_land(
    lab: TransformLab, storage_name: str
) -> None:
    storage = await lab.storage(storage_name)
    # Valid JSON that Postgres cannot store (text may not hold U+0000): only the COPY finds out.
    refused = orjson.dumps({"n": 2, "s": "nul \u0000 " + uuid.uuid4().hex})
    values = [orjson.dumps({"n": 1, "s": "a"}), refused, orjson.dumps({"n": 3, "s": "c"})]
    await lab.produce(storage_name, values, partition=1)
    await eventually(lambda: lab.positions_done(storage_name, 3), what="the partition moved past the refused value")
    assert sorted(r["n"] for r in await lab.rows(storage)) == [1, 3]
    dead = [m for m in await read_topic(lab, lab.topics.dead_letter, 1000, timeout_ms=3000) if m.value == refused]
    assert len(dead) == 1
    reason = dict(dead[0].headers)["hr-reason"].decode()
    assert reason.startswith("write refused") and "keeping it as a rejected row failed too" in reason


async def test_a_batch_is_applied_once_by_its_own_load_mode(lab: TransformLab, storage_name: str) -> None:
    storage = await lab.storage(storage_name, load_mode="merge", primary_key=["k"])
    await lab.produce(storage_name, json_values([{"k": i, "v": "pushed"} for i in range(4)]))
    await eventually(lambda: _equals(lab, storage, 4), what="the pushed rows")
    # A merge batch: updates k=0 twice (the last wins), deletes k=1, adds k=9; then the same batch again,
    # as a collector re-sends it after a crash before its cursor moved: it is applied only once.
    # Batch events carry deterministic ids (a collector's batch id and row index), which is what dedupes them.
    rows = [{"k": 0, "v": "first"}, {"k": 0, "v": "last"}, {"k": 1, "_op": "d"}, {"k": 9, "v": "new"}]
    merge_headers = [[*batch_headers("m1", "merge"), ("hr-event-id", f"m1:{i}".encode())] for i in range(len(rows))]
    for _ in range(2):
        await lab.produce(storage_name, json_values(rows), headers=merge_headers, partition=3)
        await lab.produce(storage_name, [b"{}"], headers=[batch_end_headers("m1", 4, "merge")], partition=3)
    await eventually(lambda: lab.positions_done(storage_name, 4 + 2 * 5), what="both copies of the batch")
    assert {r["k"]: r["v"] for r in await lab.rows(storage)} == {0: "last", 2: "pushed", 3: "pushed", 9: "new"}
    # The copy is counted: its four row events were dropped as duplicates of the applied batch.
    [m1] = await Catalog(lab.pool).batches(storage.name)
    assert (m1["batch_id"], m1["state"], m1["rows_seen"], m1["duplicates"]) == ("m1", "applied", 4, 4)
    # An append batch on the same storage's sibling: rows land only once the end marker counts them all.
    appended = await lab.storage(storage_name + "_a", load_mode="append")
    extra = [{"n": i} for i in range(3)]
    headers = [[*batch_headers("a1", "append"), ("hr-event-id", f"a1:{i}".encode())] for i in range(len(extra))]
    await lab.produce(appended.name, json_values(extra[:2]), headers=headers[:2], partition=0)
    await eventually(lambda: lab.positions_done(appended.name, 2), what="the first rows staged")
    assert await lab.count(appended) == 0
    await lab.produce(appended.name, json_values(extra[2:]), headers=headers[2:], partition=0)
    await lab.produce(appended.name, [b"{}"], headers=[batch_end_headers("a1", 3, "append")], partition=0)
    await eventually(lambda: _equals(lab, appended, 3), what="the append batch applied")
    await lab.produce(appended.name, json_values(extra), headers=headers, partition=0)
    await lab.produce(appended.name, [b"{}"], headers=[batch_end_headers("a1", 3, "append")], partition=0)
    await eventually(lambda: lab.positions_done(appended.name, 8), what="the re-sent batch")
    assert sorted(r["n"] for r in await lab.rows(appended)) == [0, 1, 2]
