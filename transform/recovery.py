"""Writing one topic's poll without ever stalling its partitions: wait out Postgres, retry contention, and narrow a
failing write down to the events that cause it, which are set aside with their reason while the rest is written.

1. Write everything in one transaction (transform.writer).
2. Fenced, or the storage was deleted meanwhile (or this worker held a stale copy of it): nothing is written, and
   the sink re-reads the partitions from Postgres' positions, with the storage as Postgres now has it (its events
   go to the dead letters if it is gone).
3. Postgres unreachable: wait with backoff, for as long as this worker still owns the partitions.
4. Contention (serialization failure, deadlock, timeout): retry a few times with backoff.
5. Anything else: split the events in halves and write each (bisect), down to single events.
6. A single event that still fails goes to rejected rows with the error as its reason (a batch still counts it);
   if even that fails (its payload cannot be stored), it goes to the dead-letter topic and the position moves on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from headrace.catalog import Storage, StorageNotFound
from headrace.positions import Fenced
from transform import metrics
from transform.events import Event
from transform.failures import CONTENTION_ATTEMPTS, backoff, describe, is_contention, is_unavailable
from transform.writer import StorageWriter, WriteResult

log = logging.getLogger(__name__)

DeadLetter = Callable[[list[tuple[Any, str]]], Awaitable[None]]
StillOwned = Callable[[], bool]


class Abandoned(Exception):
    """The worker lost the partitions (or is stopping) while waiting for Postgres; their new owner writes them."""


class TopicWrite:
    """One poll's events of one topic, written whatever fails; `results` collects what each transaction did."""

    def __init__(
        self,
        writer: StorageWriter,
        storage: Storage,
        topic: str,
        messages: dict[tuple[int, int], Any],
        first_offsets: dict[int, int],
        dead_letter: DeadLetter,
        still_owned: StillOwned,
    ) -> None:
        self.writer, self.storage, self.topic = writer, storage, topic
        self.messages = messages
        self.cursor = dict(first_offsets)  # per partition: the first offset not yet committed by this poll
        self.dead_letter = dead_letter
        self.still_owned = still_owned
        self.results: list[WriteResult] = []

    async def run(self, events: list[Event], next_offsets: dict[int, int]) -> None:
        """Write the events (ordered by partition, then offset), then move every partition to its next offset."""
        if events:
            await self._attempt(events)
        tail = {p: n for p, n in next_offsets.items() if self.cursor.get(p, n) < n}
        if tail:
            # Dead-lettered messages after the last event (or a poll of nothing but dead letters).
            await self._commit([], tail)

    def _span(self, events: list[Event]) -> dict[int, int]:
        last: dict[int, int] = {}
        for event in events:
            last[event.partition] = event.offset + 1
        return last

    async def _commit(self, events: list[Event], next_offsets: dict[int, int], forced: dict[int, str] | None = None):
        firsts = {p: self.cursor[p] for p in next_offsets}
        contention = 0
        unavailable = 0
        while True:
            try:
                result = await self.writer.write(self.storage.id, self.topic, events, next_offsets, firsts, forced)
            except (Fenced, StorageNotFound):
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    unavailable += 1
                    metrics.WRITE_RETRIES.labels("unavailable").inc()
                    log.warning("Postgres unavailable; retrying", extra={"topic": self.topic, "error": describe(exc)})
                    await asyncio.sleep(backoff(unavailable))
                    if not self.still_owned():
                        raise Abandoned(self.topic) from exc
                    continue
                if is_contention(exc) and contention < CONTENTION_ATTEMPTS:
                    contention += 1
                    metrics.WRITE_RETRIES.labels("contention").inc()
                    await asyncio.sleep(backoff(contention))
                    continue
                raise
            self.cursor.update(next_offsets)
            self.results.append(result)
            return result

    async def _attempt(self, events: list[Event]) -> None:
        try:
            await self._commit(events, self._span(events))
            return
        except (Fenced, Abandoned, StorageNotFound):
            raise
        except Exception as exc:
            if len(events) > 1:
                if len(self.results) == 0:
                    log.warning(
                        "a write failed; narrowing it down",
                        extra={"storage": self.storage.name, "events": len(events), "error": describe(exc)},
                    )
                middle = len(events) // 2
                await self._attempt(events[:middle])
                await self._attempt(events[middle:])
                return
            await self._set_aside(events[0], exc)

    async def _set_aside(self, event: Event, exc: Exception) -> None:
        reason = f"write refused: {describe(exc)}"
        span = self._span([event])
        try:
            await self._commit([event], span, forced={0: reason})
            metrics.ISOLATED.labels(self.storage.name, "rejected").inc()
            log.warning("event set aside in rejected rows", extra={"storage": self.storage.name, "reason": reason})
            return
        except (Fenced, Abandoned, StorageNotFound):
            raise
        except Exception as second:
            reason = f"{reason}; keeping it as a rejected row failed too: {describe(second)}"
        await self.dead_letter([(self.messages[(event.partition, event.offset)], reason)])
        await self._commit([], span)
        metrics.ISOLATED.labels(self.storage.name, "dead_letter").inc()
        log.warning("event sent to the dead letters", extra={"storage": self.storage.name, "reason": reason})
