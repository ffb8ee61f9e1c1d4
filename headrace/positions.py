"""Consumer positions kept in Postgres, advanced in the same transaction as the rows they produced."""

from __future__ import annotations

import asyncpg

from headrace.postgres import Connection


class Fenced(Exception):
    """Another worker advanced this partition meanwhile; this batch must be dropped and the partition re-read."""


class Positions:
    """Where one consumer group stands in each partition, as Postgres records it.

    The in-memory copy is what this worker believes it committed; a write only succeeds when Postgres
    still agrees, so two workers that briefly own the same partition during a rebalance never both write.
    A position belongs to one incarnation of its topic (headrace.kafka.incarnation): one taken on another
    incarnation is void, and the partition is read from its beginning.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.committed: dict[tuple[str, int], int | None] = {}
        self.incarnations: dict[str, str] = {}

    async def load(
        self,
        conn: Connection | asyncpg.Pool,
        partitions: list[tuple[str, int]],
        incarnations: dict[str, str] | None = None,
    ) -> tuple[dict[tuple[str, int], int | None], list[tuple[str, int]]]:
        """The stored positions of these partitions, and those whose position was void (another incarnation)."""
        if incarnations is not None:
            self.incarnations.update(incarnations)
        rows = await conn.fetch(
            "SELECT topic, partition, next_offset, incarnation FROM headrace.stream_positions"
            " WHERE group_name = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))",
            self.group,
            [t for t, _ in partitions],
            [p for _, p in partitions],
        )
        found: dict[tuple[str, int], int | None] = {}
        void: list[tuple[str, int]] = []
        for r in rows:
            tp = (r["topic"], r["partition"])
            if r["incarnation"] == self.incarnations.get(r["topic"]):
                found[tp] = r["next_offset"]
            else:
                void.append(tp)
        for tp in partitions:
            self.committed[tp] = found.get(tp)
        return {tp: found.get(tp) for tp in partitions}, void

    async def advance(
        self,
        conn: Connection,
        topic: str,
        next_offsets: dict[int, int],
        first_offsets: dict[int, int],
    ) -> None:
        """Move the positions inside the caller's transaction, failing with Fenced if the batch is stale.

        A batch is stale when Postgres already holds a position past its first offset on the same incarnation:
        another worker (or this one, before a rebalance re-read the partition) committed those events. Postgres
        is the judge, and the row lock of the upsert makes concurrent writers of one partition take turns.
        A batch read from a topic that was deleted and created again since this worker loaded its incarnation
        (the marker in headrace.topic_incarnations changed) is stale too: its offsets mean nothing any more.
        """
        if not next_offsets:
            return
        partitions = list(next_offsets)
        marker = (self.incarnations.get(topic) or "").rpartition("/")[2] or "-"
        moved = await conn.fetch(
            "INSERT INTO headrace.stream_positions (group_name, topic, partition, next_offset, incarnation)"
            " SELECT $1, $2, p, n, $6 FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS b(p, n, f)"
            " WHERE coalesce((SELECT marker::text FROM headrace.topic_incarnations WHERE topic = $2), '-') = $7"
            " ON CONFLICT (group_name, topic, partition) DO UPDATE"
            " SET next_offset = EXCLUDED.next_offset, incarnation = EXCLUDED.incarnation, updated_at = now()"
            " WHERE headrace.stream_positions.incarnation IS DISTINCT FROM EXCLUDED.incarnation"
            "   OR headrace.stream_positions.next_offset <= ("
            "     SELECT f FROM unnest($3::int[], $5::bigint[]) AS s(p, f) WHERE s.p = EXCLUDED.partition)"
            " RETURNING partition",
            self.group,
            topic,
            partitions,
            [next_offsets[p] for p in partitions],
            [first_offsets[p] for p in partitions],
            self.incarnations.get(topic),
            marker,
        )
        stale = set(partitions) - {r["partition"] for r in moved}
        if stale:
            raise Fenced(
                f"{topic}{sorted(stale)} already committed past this batch's first offsets, or the topic was created"
                " again since its positions were loaded"
            )

    def committed_now(self, topic: str, next_offsets: dict[int, int]) -> None:
        """Record, after the transaction committed, where this worker now stands."""
        for partition, next_offset in next_offsets.items():
            self.committed[(topic, partition)] = next_offset

    def forget(self, partitions: list[tuple[str, int]]) -> None:
        for tp in partitions:
            self.committed.pop(tp, None)
