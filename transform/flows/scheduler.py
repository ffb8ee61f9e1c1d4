"""The flow scheduler: starts every flow whose cron or interval is due; runs missed meanwhile make one run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from transform.flows import metrics
from transform.flows.runner import FlowRunner, RunInProgress
from transform.flows.store import FlowStore, expected_interval

log = logging.getLogger(__name__)

# How often the schedules' gauges are brought up to date with the definitions (one read of every flow).
SHOW_SECONDS = 60.0


class FlowScheduler:
    """Polls headrace.flows for due flows. Claiming a flow moves its next time past now in Postgres, so one instance
    among several takes it; the run's advisory lock keeps a run that is still going from being doubled."""

    def __init__(
        self,
        store: FlowStore,
        runner: FlowRunner,
        poll_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.runner = runner
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.scheduled_names: set[str] = set()
        self._shown_at: float | None = None

    async def show_schedules(self) -> None:
        """The gauges a "flow overdue" alert compares: each scheduled flow's expected interval, and its last success
        as recorded in Postgres, read once at start (the runner keeps it current after), so a restart does not hide
        it. Every instance shows every flow: which instance runs a flow is a matter of chance."""
        flows = await self.store.list()
        if self._shown_at is None:
            last = await self.store.last_successes()
            for stored in flows:
                if stored.id in last:
                    metrics.LAST_SUCCESS.labels(stored.flow.name).set(last[stored.id].timestamp())
        intervals = {s.flow.name: expected_interval(s.flow.schedule) for s in flows}
        scheduled = {name: seconds for name, seconds in intervals.items() if seconds is not None}
        for name in self.scheduled_names - scheduled.keys():
            # Deleted or no longer scheduled: nothing is due any more, so nothing can be overdue.
            metrics.SCHEDULE_INTERVAL.remove(name)
        for name, seconds in scheduled.items():
            metrics.SCHEDULE_INTERVAL.labels(name).set(seconds)
        self.scheduled_names = set(scheduled)
        self._shown_at = time.monotonic()

    async def tick(self) -> int:
        started = 0
        for stored in await self.store.claim_due(self.clock()):
            try:
                await self.runner.start(stored, "schedule")
                started += 1
            except RunInProgress:
                log.warning(
                    "flow still running at its next time; this time is skipped", extra={"flow": stored.flow.name}
                )
        return started

    async def run_forever(self) -> None:
        while True:
            if self._shown_at is None or time.monotonic() - self._shown_at >= SHOW_SECONDS:
                try:
                    await self.show_schedules()
                except Exception:  # the gauges are not worth a missed run: scheduling goes on
                    log.exception("showing the flow schedules failed")
            try:
                await self.tick()
            except Exception:
                log.exception("flow scheduler tick failed")
            await asyncio.sleep(self.poll_seconds)
