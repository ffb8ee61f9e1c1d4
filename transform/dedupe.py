"""The event-id window: an event written twice with the same id is one row, whichever partition each copy took.

Each written event's id is remembered (a 16-byte BLAKE2b hash in headrace.event_ids) in the transaction that
writes its row, for the deduplication window; a later copy finds it there and is dropped. Two workers writing
copies at once serialize on the primary key: the second waits for the first to commit, then sees the conflict.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence

import asyncpg

from headrace.postgres import Connection

log = logging.getLogger(__name__)

# Rows removed per statement when the window is pruned, so one prune never holds locks for long.
PRUNE_CHUNK = 50_000


def id_hash(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=16).digest()


async def first_sightings(conn: Connection, storage_id: uuid.UUID, event_ids: Sequence[str]) -> list[bool]:
    """For each id in order, whether this is its first copy: never written before, nor earlier in the list."""
    if not event_ids:
        return []
    hashes = [id_hash(event_id) for event_id in event_ids]
    # One sorted order for every writer, so two transactions inserting overlapping ids cannot deadlock.
    distinct = sorted(set(hashes))
    fresh = {
        bytes(r["id_hash"])
        for r in await conn.fetch(
            "INSERT INTO headrace.event_ids (storage_id, id_hash) SELECT $1, h FROM unnest($2::bytea[]) AS h"
            " ON CONFLICT DO NOTHING RETURNING id_hash",
            storage_id,
            distinct,
        )
    }
    out = []
    for digest in hashes:
        first = digest in fresh
        if first:
            fresh.discard(digest)  # a second copy in the same list is a duplicate too
        out.append(first)
    return out


async def prune(pool: asyncpg.Pool, window_hours: float) -> int:
    """Forget ids older than the window; returns how many were forgotten."""
    removed = 0
    while True:
        status = await pool.execute(
            "DELETE FROM headrace.event_ids WHERE ctid = ANY(ARRAY("
            " SELECT ctid FROM headrace.event_ids WHERE seen_at < now() - make_interval(secs => $1) LIMIT $2))",
            window_hours * 3600,
            PRUNE_CHUNK,
        )
        count = int(status.split()[-1])
        removed += count
        if count < PRUNE_CHUNK:
            return removed
