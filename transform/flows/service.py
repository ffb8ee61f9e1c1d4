"""The flows part of the transform service: its pool, store, runner, planner and scheduler, started and stopped."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from headrace.catalog import Catalog
from headrace.postgres import create_pool, migrate
from headrace.settings import Settings
from transform.flows.planner import Planner
from transform.flows.runner import FlowRunner
from transform.flows.scheduler import FlowScheduler
from transform.flows.store import FlowStore


class Flows:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.catalog = Catalog(pool, settings.max_columns)
        self.store = FlowStore(pool, settings)
        self.runner = FlowRunner(settings, pool, self.store, settings.flow_test_pause_seconds)
        self.planner = Planner(settings, pool)
        self.scheduler = FlowScheduler(self.store, self.runner, settings.flow_poll_seconds)
        self._scheduling: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Flows:
        # A pool of its own: the sink's connections are for its writes, and a long step must not starve them.
        pool = await create_pool(settings, application_name="headrace-transform-flows")
        await migrate(pool)
        flows = cls(settings, pool)
        await flows.runner.close_interrupted()
        if settings.flow_scheduler:
            flows._scheduling = asyncio.create_task(flows.scheduler.run_forever(), name="flow-scheduler")
        return flows

    async def stop(self) -> None:
        if self._scheduling is not None:
            self._scheduling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduling
        await self.runner.stop()
        await self.pool.close()
