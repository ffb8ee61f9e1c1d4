"""The exporter HTTP service: the export API, and the scheduler that starts runs at frequency boundaries."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiohttp import web

from exporter.api import ExportApi
from exporter.definitions import ExportStore
from exporter.runs import ExportRunner
from exporter.scheduler import Scheduler
from headrace.web.jobs import JobRoutes, Jobs
from headrace.web.kafka_probe import KafkaProbedService


class ExporterService(KafkaProbedService):
    openapi_document = Path(__file__).with_name("openapi.yaml")
    name = "exporter"
    store: ExportStore
    runner: ExportRunner
    scheduler: Scheduler | None = None
    jobs: Jobs | None = None
    _scheduling: asyncio.Task | None = None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        ExportApi(self).add_routes(router)
        JobRoutes(self).register(router)

    async def start(self) -> None:
        await super().start()
        assert self.pool is not None
        self.store = ExportStore(self.pool, self.settings)
        self.runner = ExportRunner(self.settings, self.pool)
        self.jobs = Jobs(self.pool, self.name)
        if self.settings.exporter_scheduler:
            self.scheduler = Scheduler(self.store, self.runner)
            self._scheduling = asyncio.create_task(self.scheduler.run_forever(), name="export-scheduler")

    async def stop(self) -> None:
        if self._scheduling is not None:
            self._scheduling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduling
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.jobs is not None:
            await self.jobs.stop()
        await super().stop()
