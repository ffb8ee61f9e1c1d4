"""The flow scheduler: starts every flow whose cron or interval is due; runs missed meanwhile make one run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from transform.flows.runner import FlowRunner, RunInProgress
from transform.flows.store import FlowStore

log = logging.getLogger(__name__)


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
            try:
                await self.tick()
            except Exception:
                log.exception("flow scheduler tick failed")
            await asyncio.sleep(self.poll_seconds)
