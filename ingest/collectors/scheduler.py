"""Runs due collectors inside the ingest service; an advisory lock per run keeps instances from running one twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from headrace.catalog import Catalog
from headrace.settings import Settings
from ingest.collectors.runner import CollectorBusy, CollectorRunner

log = logging.getLogger(__name__)


class CollectorScheduler:
    """A background task: every poll interval, run each collector whose next run time has come."""

    def __init__(self, runner: CollectorRunner, poll_seconds: float) -> None:
        self.runner = runner
        self.poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="collector-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("collector scheduler round failed")
            await asyncio.sleep(self.poll_seconds)

    async def run_due(self) -> None:
        for collector in await self.runner.store.due(datetime.now(UTC)):
            try:
                result = await self.runner.run(collector.name, only_if_due=True)
                log.info("scheduled collector run", extra={"collector": collector.name, "result": result})
            except CollectorBusy:
                continue  # another instance runs it; it also schedules the next run
            except Exception as exc:
                # The run recorded its error and its next run time; the scheduler carries on with the others.
                log.warning("collector run failed", extra={"collector": collector.name, "error": str(exc)})


def start_collector_scheduler(
    settings: Settings, catalog: Catalog, producer: AIOKafkaProducer
) -> CollectorScheduler | None:
    """The ingest service's scheduler, started; None when HEADRACE_COLLECTOR_SCHEDULER is off."""
    if not settings.collector_scheduler:
        return None
    scheduler = CollectorScheduler(CollectorRunner(settings, catalog, producer), settings.collector_poll_seconds)
    scheduler.start()
    return scheduler


async def stop_collector_scheduler(scheduler: CollectorScheduler | None) -> None:
    if scheduler is not None:
        await scheduler.stop()
