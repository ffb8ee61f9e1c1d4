"""The column-wise fast path against the row path, through real workers, broker and Postgres: the same random events
into two storages, one worker writing column-wise where it can and one with the fast path off, give the same rows,
the same models and the same rejected rows (so the same dead letters: every event is consumed, and what is neither a
row, a duplicate nor a reject is a dead letter)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.catalog import Catalog, Storage
from headrace.events import event_headers
from headrace.kafka import Topics, ensure_topics
from tests.eventually import eventually
from tests.transform.conftest import TransformLab, lab_for
from tests.unit.test_columnar import MERGE_RECORDS, RECORDS

SEED = {"i": 1, "f": 0.5, "b": True, "d": "2024-01-01", "ts": "2024-01-01T00:00:00Z", "s": "x", "j": {"a": 1}}
# Named events draw their ids from a few, so copies of one id meet within a poll and across polls.
IDS = st.none() | st.sampled_from(["a", "b", "c", "d"]).map(lambda s: f"id-{s}")


@pytest.fixture
async def row_lab(isolated_env: dict[str, str], pool: asyncpg.Pool, work_dir: Path) -> AsyncIterator[TransformLab]:
    """A worker with the fast path off: every poll takes the row path."""
    lab = lab_for(isolated_env | {"HEADRACE_TRANSFORM_FAST_PATH": "false"}, pool, work_dir / "row-path")
    lab.log_dir.mkdir(exist_ok=True)
    await ensure_topics(lab.settings, [Topics(lab.settings.topic_prefix).dead_letter])
    await lab.worker().ready()
    yield lab
    for worker in lab.workers:
        worker.stop()


async def produce(lab: TransformLab, name: str, records: list[dict[str, Any]], ids: list[str | None]) -> None:
    # One partition, sent at once: both workers see the events in one poll, so only the path they take differs.
    # The standard library writes integers of any size (orjson stops at 64 bits).
    values: list[bytes | None] = [json.dumps(r).encode() for r in records]
    headers = [event_headers(i, 1_700_000_000_000 + n) for n, i in enumerate(ids)]
    await lab.produce(name, values, headers=headers, partition=0)


async def stored(lab: TransformLab, storage: Storage) -> dict[str, Any]:
    """What a storage holds: rows (event ids without the topic), model, rejected rows."""
    topic = lab.topics.ingest(storage.name)
    rows = []
    for row in await lab.rows(storage):
        found = {k: v for k, v in row.items() if k not in ("_inserted_at", "_xid")}
        found["_event_id"] = found["_event_id"].replace(topic, "<topic>")
        rows.append(found)
    model = await Catalog(lab.pool).model(storage.id)
    rejected = await lab.pool.fetch(
        "SELECT event_id, payload, reason FROM headrace.rejected_rows WHERE storage_id = $1 ORDER BY id", storage.id
    )
    return {
        "rows": rows,
        "model": model.to_json(),
        "rejected": [(r["event_id"].replace(topic, "<topic>"), r["payload"], r["reason"]) for r in rejected],
    }


async def fast_polls(lab: TransformLab) -> int:
    found = re.findall(
        r'headrace_transform_fast_path_polls_total\{.*outcome="written".*\} (\S+)', await lab.workers[0].metrics()
    )
    return int(sum(float(v) for v in found))


async def written(lab: TransformLab, name: str, events: int) -> None:
    await eventually(lambda: lab.positions_done(name, events), what=f"{events} events written", interval=0.05)


@pytest.mark.parametrize("load_mode", ["append", "merge"])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_the_fast_path_and_the_row_path_store_the_same(
    lab: TransformLab, row_lab: TransformLab, load_mode: str, data: st.DataObject
) -> None:
    merge = load_mode == "merge"
    records = data.draw(st.lists(MERGE_RECORDS if merge else RECORDS, min_size=1, max_size=12), label="records")
    ids = data.draw(st.lists(IDS, min_size=len(records), max_size=len(records)), label="ids")
    suffix = uuid.uuid4().hex[:8]
    storages = {}
    for side, each in (("fast", lab), ("row", row_lab)):
        name = f"{side}_{suffix}"
        storages[side] = (each, name, await each.storage(name, load_mode, ["i"] if merge else None))
        # The model first, with every column, so the random events find it there (and the fast worker knows it).
        await produce(each, name, [SEED], ["id-a"])
    for each, name, _ in storages.values():
        await written(each, name, 1)
    for each, name, _ in storages.values():
        await produce(each, name, records, ids)
    for each, name, _ in storages.values():
        await written(each, name, 1 + len(records))
    fast, row = [await stored(each, storage) for each, _, storage in storages.values()]
    assert fast == row


@pytest.mark.parametrize("load_mode", ["append", "merge"])
async def test_a_poll_that_fits_takes_the_fast_path(lab: TransformLab, storage_name: str, load_mode: str) -> None:
    merge = load_mode == "merge"
    storage = await lab.storage(storage_name, load_mode, ["i"] if merge else None)
    await produce(lab, storage_name, [SEED], [None])
    await eventually(lambda: lab.positions_done(storage_name, 1), what="the seed written")
    before = await fast_polls(lab)
    times = [f"2024-01-01T00:00:{n:02d}.5+02:00" for n in range(50)]
    records = [{**SEED, "i": n % 25 if merge else n, "s": f"n{n}", "ts": times[n]} for n in range(50)]
    await produce(lab, storage_name, records, [f"e{n % 40}" for n in range(50)])  # ten copies: written once
    await eventually(lambda: lab.positions_done(storage_name, 51), what="events written")
    assert await fast_polls(lab) > before
    rows = await lab.rows(storage, order="i, _source_offset")
    if merge:
        # Keys 0 to 14 came twice (the seed's 1 too): the later event wins; the copies of e0 to e9 were dropped.
        assert [(r["i"], r["s"]) for r in rows] == [(k, f"n{k + 25 if k < 15 else k}") for k in range(25)]
    else:
        assert [r["s"] for r in rows] == ["n0", "x", *(f"n{n}" for n in range(1, 40))]
        assert rows[5]["ts"].isoformat() == "2023-12-31T22:00:04.500000+00:00"
