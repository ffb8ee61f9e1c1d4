"""Consumer positions kept in Postgres, advanced in the same transaction as the rows they produced."""

from __future__ import annotations

import asyncpg


class Fenced(Exception):
    """Another worker advanced this partition meanwhile; this batch must be dropped and the partition re-read."""


class Positions:
    """Where one consumer group stands in each partition, as Postgres records it.

    The in-memory copy is what this worker believes it committed; a write only succeeds when Postgres
    still agrees, so two workers that briefly own the same partition during a rebalance never both write.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.committed: dict[tuple[str, int], int | None] = {}

    async def load(
        self, conn: asyncpg.Connection | asyncpg.Pool, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None]:
        rows = await conn.fetch(
            "SELECT topic, partition, next_offset FROM headrace.stream_positions"
            " WHERE group_name = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))",
            self.group,
            [t for t, _ in partitions],
            [p for _, p in partitions],
        )
        found = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
        for tp in partitions:
            self.committed[tp] = found.get(tp)
        return {tp: found.get(tp) for tp in partitions}

    async def advance(self, conn: asyncpg.Connection, topic: str, next_offsets: dict[int, int]) -> None:
        """Move the positions inside the caller's transaction, failing with Fenced if they moved under us."""
        for partition, next_offset in next_offsets.items():
            expected = self.committed.get((topic, partition))
            if expected is None:
                done = await conn.fetchval(
                    "INSERT INTO headrace.stream_positions (group_name, topic, partition, next_offset)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                    self.group,
                    topic,
                    partition,
                    next_offset,
                )
            else:
                done = await conn.fetchval(
                    "UPDATE headrace.stream_positions SET next_offset = $4, updated_at = now()"
                    " WHERE group_name = $1 AND topic = $2 AND partition = $3 AND next_offset = $5 RETURNING 1",
                    self.group,
                    topic,
                    partition,
                    next_offset,
                    expected,
                )
            if done is None:
                raise Fenced(f"{topic}[{partition}] was advanced by another worker")

    def committed_now(self, topic: str, next_offsets: dict[int, int]) -> None:
        """Record, after the transaction committed, where this worker now stands."""
        for partition, next_offset in next_offsets.items():
            self.committed[(topic, partition)] = next_offset

    def forget(self, partitions: list[tuple[str, int]]) -> None:
        for tp in partitions:
            self.committed.pop(tp, None)
