"""Positions in Postgres: a batch commits only if no position past its first offset is stored (the fence)."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from headrace.positions import Fenced, Positions


async def advance(pool: asyncpg.Pool, positions: Positions, topic: str, spans: dict[int, tuple[int, int]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await positions.advance(
            conn, topic, {p: n for p, (_, n) in spans.items()}, {p: f for p, (f, _) in spans.items()}
        )


async def test_a_stale_batch_is_fenced_and_moves_nothing(pool: asyncpg.Pool) -> None:
    positions = Positions(f"group-{uuid.uuid4().hex[:8]}")
    topic = "fence"
    await advance(pool, positions, topic, {0: (0, 5), 1: (0, 3)})
    # A re-read of partition 0 from offset 0 (a rebalance sought back) must not commit again, nor move partition 1.
    with pytest.raises(Fenced):
        await advance(pool, positions, topic, {0: (0, 7), 1: (3, 4)})
    # Gaps are allowed (offsets skipped by dead letters or compaction); overlaps are not.
    await advance(pool, positions, topic, {0: (6, 9), 1: (3, 4)})
    stored, void = await positions.load(pool, [(topic, 0), (topic, 1)])
    assert stored == {(topic, 0): 9, (topic, 1): 4} and void == []


async def test_a_position_on_another_incarnation_of_the_topic_is_void(pool: asyncpg.Pool) -> None:
    """A restarted in-memory broker (or a recreated topic) starts at offset 0: old positions must not skip it."""
    group, topic = f"group-{uuid.uuid4().hex[:8]}", "reborn"
    before = Positions(group)
    await before.load(pool, [(topic, 0)], {topic: "cluster-a/-"})
    await advance(pool, before, topic, {0: (0, 23)})
    after = Positions(group)
    stored, void = await after.load(pool, [(topic, 0)], {topic: "cluster-b/-"})
    assert stored == {(topic, 0): None} and void == [(topic, 0)]
    # The new incarnation's first write is not fenced by the old position, and takes its place.
    await advance(pool, after, topic, {0: (0, 5)})
    stored, void = await Positions(group).load(pool, [(topic, 0)], {topic: "cluster-b/-"})
    assert stored == {(topic, 0): 5} and void == []


async def test_a_batch_read_before_its_topic_was_created_again_is_fenced(pool: asyncpg.Pool) -> None:
    """A worker still holding the deleted topic's incarnation must not commit offsets of the new topic as old ones."""
    group, topic = f"group-{uuid.uuid4().hex[:8]}", f"recreated-{uuid.uuid4().hex[:8]}"
    first, second = uuid.uuid4(), uuid.uuid4()
    await pool.execute("INSERT INTO headrace.topic_incarnations (topic, marker) VALUES ($1, $2)", topic, first)
    worker = Positions(group)
    await worker.load(pool, [(topic, 0)], {topic: f"cluster/{first}"})
    await advance(pool, worker, topic, {0: (0, 3)})
    # The storage is deleted (its positions with it) and created again: a new marker, offsets from 0.
    await pool.execute("DELETE FROM headrace.stream_positions WHERE topic = $1", topic)
    await pool.execute("UPDATE headrace.topic_incarnations SET marker = $2 WHERE topic = $1", topic, second)
    with pytest.raises(Fenced):
        await advance(pool, worker, topic, {0: (3, 4)})
    stored, void = await worker.load(pool, [(topic, 0)], {topic: f"cluster/{second}"})
    assert stored == {(topic, 0): None} and void == []
    await advance(pool, worker, topic, {0: (0, 1)})
    stored, _ = await Positions(group).load(pool, [(topic, 0)], {topic: f"cluster/{second}"})
    assert stored == {(topic, 0): 1}
