"""The scheduler: starts a run of every export at each boundary of its frequency (:00, :15, :30, :45 UTC)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from exporter import metrics
from exporter.definitions import Export, ExportStore
from exporter.runs import ExportRunner, RunFailed, RunInProgress

log = logging.getLogger(__name__)

# How often the definitions are re-read, at most; boundaries are whole minutes, so a minute is enough.
TICK_SECONDS = 60.0


def slot_of(moment: datetime, frequency_minutes: int) -> int:
    """The index of the frequency interval a moment falls in, counted from the epoch (so boundaries are UTC-aligned)."""
    return int(moment.timestamp() // (frequency_minutes * 60))


def next_boundary(moment: datetime, frequency_minutes: int) -> datetime:
    return datetime.fromtimestamp((slot_of(moment, frequency_minutes) + 1) * frequency_minutes * 60, UTC)


class Scheduler:
    """Keeps, per export, the slot it last saw; crossing into a new slot starts a run unless one is going."""

    def __init__(
        self, store: ExportStore, runner: ExportRunner, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.runner = runner
        self.clock = clock
        self.seen_slots: dict[uuid.UUID, int] = {}
        self.running: dict[uuid.UUID, asyncio.Task] = {}
        self.scheduled_names: set[str] = set()
        self._seeded = False

    async def tick(self, now: datetime) -> list[asyncio.Task]:
        """Start the runs due at `now`; an export seen for the first time waits for its next boundary."""
        started = []
        exports = await self.store.list()
        self.seen_slots = {e.id: self.seen_slots[e.id] for e in exports if e.id in self.seen_slots}
        await self._show_schedules(exports)
        for export in exports:
            if not export.definition.scheduled:
                continue
            slot = slot_of(now, export.definition.frequency_minutes)
            previous = self.seen_slots.get(export.id)
            self.seen_slots[export.id] = slot
            if previous is None or slot <= previous:
                continue
            if export.id in self.running and not self.running[export.id].done():
                log.warning("export run still going at its next boundary", extra={"export": export.name})
                continue
            task = asyncio.create_task(self._run(export), name=f"export-{export.name}")
            self.running[export.id] = task
            started.append(task)
        return started

    async def _show_schedules(self, exports: list[Export]) -> None:
        """The gauges an "export overdue" alert compares: each scheduled export's frequency, and its last success
        as recorded in Postgres once at start (the runner keeps it current after), so a restart does not hide it."""
        if not self._seeded:
            last = await self.store.last_live_successes()
            for export in exports:
                if export.id in last:
                    metrics.LAST_SUCCESS.labels(export.name).set(last[export.id].timestamp())
            self._seeded = True
        scheduled = {e.name: e.definition.frequency_minutes * 60 for e in exports if e.definition.scheduled}
        for name in self.scheduled_names - scheduled.keys():
            # Deleted or no longer scheduled: nothing is due any more, so nothing can be overdue.
            metrics.SCHEDULE_INTERVAL.remove(name)
        for name, seconds in scheduled.items():
            metrics.SCHEDULE_INTERVAL.labels(name).set(seconds)
        self.scheduled_names = set(scheduled)

    async def _run(self, export: Export) -> None:
        try:
            await self.runner.run(export, trigger="schedule")
        except (RunInProgress, RunFailed) as exc:
            # The failure is recorded and counted by the runner; the next boundary retries the same range.
            log.warning("scheduled export run did not complete", extra={"export": export.name, "error": str(exc)})
        except Exception:
            log.exception("scheduled export run crashed", extra={"export": export.name})

    async def run_forever(self) -> None:
        while True:
            now = self.clock()
            try:
                await self.tick(now)
            except Exception:
                log.exception("scheduler tick failed")
            # Wake just after the next whole minute, where every 15/30/60-minute boundary lies.
            wake = next_boundary(now, 1) + timedelta(milliseconds=50)
            await asyncio.sleep(min(TICK_SECONDS, max(0.05, (wake - self.clock()).total_seconds())))

    async def stop(self) -> None:
        tasks = [t for t in self.running.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
