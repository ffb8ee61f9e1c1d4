"""Export runs: plan a range, read it from one snapshot, shape and write files, deliver them, report, then commit."""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import orjson
import pyarrow as pa

from exporter import metrics
from exporter.definitions import Export, ExportDefinition
from exporter.delivery import Delivery
from exporter.destinations import Destination, open_destination
from exporter.files import RunFiles
from exporter.history import History, RunResult
from exporter.partitioning import Layout
from exporter.planning import plan_live
from exporter.reading import Snapshot, open_snapshot
from exporter.shaping import Output, SourceShape
from headrace.catalog import Catalog
from headrace.formats import make_format
from headrace.models import ColumnType
from headrace.postgres import connect, quote_ident
from headrace.progress import Progress
from headrace.secrets import redact
from headrace.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["ExportRunner", "RunFailed", "RunInProgress", "RunResult"]


class RunInProgress(RuntimeError):
    """Another run of the same export holds its lock."""


class RunFailed(RuntimeError):
    """A run stopped before its report; nothing was committed and its rows go out with the next run."""


# Shaping and writing (compression included) run on these threads, so the event loop stays free. Few, long-lived
# threads: each keeps an allocator heap of its own, and a run spread over many threads would keep many.
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="export-work")


async def _work(function: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_WORKERS, function)


def _shape_into(
    files: RunFiles, shape: SourceShape, batch: pa.RecordBatch, period: tuple[datetime, datetime] | None
) -> None:
    files.add(shape.shape(batch, period))


def _lock_key(export: Export) -> int:
    return uuid.uuid5(export.id, "run").int % (2**63)


class ExportRunner:
    """Runs exports (live and regenerated).

    A live run ships the rows of the transactions [horizon, snapshot xmin). The new horizon commits with the run's
    record only after the report is written; a run that fails leaves its range recorded, and the next run replays
    exactly that range under the same report stamp, so it rewrites the same file names and no row is in two
    reported files.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.history = History(pool)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[asyncpg.Connection]:
        """The run's own connection, outside the pool: a run holds it throughout (its lock, its snapshot), and
        runs holding pooled connections could leave none for their own bookkeeping."""
        conn = await connect(self.settings)
        try:
            yield conn
        finally:
            await conn.close()

    @asynccontextmanager
    async def _exclusive(self, export: Export) -> AsyncIterator[asyncpg.Connection]:
        """One run of an export at a time, across every exporter instance, held by a session advisory lock."""
        async with self._session() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(export)):
                raise RunInProgress(f"export {export.name!r} is already running")
            yield conn  # closing the connection releases the lock

    @asynccontextmanager
    async def _spool(self) -> AsyncIterator[Path]:
        directory = Path(tempfile.mkdtemp(prefix="headrace-export-", dir=self.settings.exporter_spool_dir))
        try:
            yield directory
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    def _target(self, definition: ExportDefinition, given: Destination | None) -> Destination:
        """The destination a run delivers to: the one given (tests), else the definition's, outbound-checked."""
        return given or open_destination(definition.destination, self.settings, self.pool)

    def _snapshot(
        self, conn: asyncpg.Connection, definition: ExportDefinition
    ) -> AbstractAsyncContextManager[Snapshot]:
        return open_snapshot(conn, Catalog(self.pool), self.settings.require_database_url(), definition)

    async def _fill(
        self,
        snapshot: Snapshot,
        definition: ExportDefinition,
        output: Output,
        where: dict[uuid.UUID, str],
        files: RunFiles,
        delivery: Delivery,
        progress: Progress,
        period: tuple[datetime, datetime] | None = None,
    ) -> int:
        """Read every source's rows, shape them and write them into files; returns how many rows were read."""
        read = 0
        for storage in snapshot.storages:
            shape = SourceShape(definition, output, storage.name, snapshot.models[storage.id])
            batches = snapshot.batches(storage.qualified_table, shape.select_list(), where[storage.id])
            async with aclosing(batches) as stream:
                async for batch in stream:
                    read += len(batch)
                    progress.add(len(batch))
                    await _work(functools.partial(_shape_into, files, shape, batch, period))
                    await delivery.submit(files.take_ready())
        return read

    @staticmethod
    async def _finish(files: RunFiles, delivery: Delivery) -> None:
        """Close the files still open one by one, each uploaded while the next is compressed and closed."""
        await _work(files.flush_all)
        while files.open or files.ready:
            await delivery.submit(await _work(files.finish_one))

    # -- live runs --------------------------------------------------------------------------------------

    async def run(
        self,
        export: Export,
        trigger: str = "manual",
        destination: Destination | None = None,
        progress: Progress | None = None,
    ) -> RunResult:
        """One live run now: every row written since the last reported run, delivered and reported.

        `progress` counts the rows read (their number is known only once they are all read).
        """
        begun = time.perf_counter()
        definition = export.definition
        layout = Layout(definition.destination.kind, definition.destination.folder, export.name)
        async with self._exclusive(export) as session:
            result: RunResult | None = None
            files: RunFiles | None = None
            try:
                async with self._spool() as spool, self._target(definition, destination) as target:
                    async with self._snapshot(session, definition) as snapshot:
                        plan = await plan_live(self.history, export, snapshot.xmin)
                        xids = (plan.range.start, plan.range.end)
                        result = RunResult(
                            plan.run_id, export.name, "live", "running", plan.started_at, range=plan.range.to_json()
                        )
                        result.replay_of = plan.replay_of
                        await self.history.start(
                            export, result, trigger, xids=xids, stamp=plan.stamp_at, delivered=plan.inherited
                        )
                        output = Output.build(definition, list(snapshot.models.values()), self.settings.max_columns)
                        fmt = make_format(definition.file_options(), output.schema)
                        files = RunFiles(
                            fmt, layout, export.id, plan.range.key, definition.partition_level,
                            definition.max_rows_per_file, spool,
                        )  # fmt: skip
                        delivery = Delivery(target, layout, functools.partial(self.history.delivered, plan.run_id))
                        delivery.start()
                        try:
                            where = {s.id: plan.range.where for s in snapshot.storages}
                            read = await self._fill(
                                snapshot, definition, output, where, files, delivery, progress or Progress("rows")
                            )
                        except BaseException:
                            await delivery.stop()
                            raise
                    # The snapshot and its table locks are released: what is left is closing files and delivery.
                    try:
                        await self._finish(files, delivery)
                    except BaseException:
                        await delivery.stop()
                        raise
                    await delivery.drain()
                    await delivery.remove_leftovers(plan.inherited)
                    result.dropped_privacy, result.unknown_time = files.dropped_privacy, files.unknown_time
                    result.status = "succeeded" if read else "empty"
                    if read:
                        await delivery.report(result, plan.stamp_at, {"export_id": str(export.id)})
                # The horizon moves only now, after the report: a crash before this line replays the same range.
                await self.history.finish_live(export, result, xids)
            except Exception as exc:
                if files is not None:
                    await asyncio.to_thread(files.abandon)
                if result is None:
                    raise RunFailed(f"export {export.name!r} run failed before it started: {redact(str(exc))}") from exc
                result.status = "failed"
                await self.history.finish(result, f"{type(exc).__name__}: {exc}")
                self._count(export, result, time.perf_counter() - begun)
                log.warning("export run failed", extra={"export": export.name, "error": redact(str(exc))})
                raise RunFailed(f"export {export.name!r} run failed: {redact(str(exc))}") from exc
        self._count(export, result, time.perf_counter() - begun)
        log.info(
            "export run",
            extra={"export": export.name, "status": result.status, "rows": result.rows, "files": len(result.files)},
        )
        return result

    # -- regeneration ------------------------------------------------------------------------------------

    async def regenerate(
        self,
        export: Export,
        start: datetime,
        end: datetime,
        folder: str,
        destination: Destination | None = None,
        trigger: str = "manual",
        progress: Progress | None = None,
    ) -> RunResult:
        """Re-export rows whose event time is in [start, end) from the storages' tables into `folder`.

        Same partitioning and naming as the live files, its own manifest and report; the horizon is untouched.
        """
        begun = time.perf_counter()
        definition = export.definition
        period = {"from": start.isoformat(), "to": end.isoformat(), "folder": folder}
        result = RunResult(uuid.uuid4(), export.name, "regenerate", "running", datetime.now(UTC), range=period)
        await self.history.start(export, result, trigger)
        layout = Layout(definition.destination.kind, folder, export.name)
        run_key = "regenerate|" + orjson.dumps(period, option=orjson.OPT_SORT_KEYS).decode()
        files: RunFiles | None = None
        try:
            async with self._spool() as spool, self._target(definition, destination) as target:
                delivery = Delivery(target, layout, functools.partial(self.history.delivered, result.run_id))
                delivery.start()
                try:
                    async with self._session() as session, self._snapshot(session, definition) as snapshot:
                        output = Output.build(definition, list(snapshot.models.values()), self.settings.max_columns)
                        files = RunFiles(
                            make_format(definition.file_options(), output.schema), layout, export.id, run_key,
                            definition.partition_level, definition.max_rows_per_file, spool,
                        )  # fmt: skip
                        where = {
                            s.id: self._period_where(s.id, snapshot, definition, start, end) for s in snapshot.storages
                        }
                        await self._fill(
                            snapshot, definition, output, where, files, delivery, progress or Progress("rows"),
                            (start, end),
                        )  # fmt: skip
                    await self._finish(files, delivery)
                except BaseException:
                    await delivery.stop()
                    raise
                await delivery.drain()
                result.dropped_privacy, result.unknown_time = files.dropped_privacy, files.unknown_time
                result.status = "succeeded"
                await delivery.report(result, result.started_at, {"export_id": str(export.id)})
            await self.history.finish(result)
        except Exception as exc:
            if files is not None:
                await asyncio.to_thread(files.abandon)
            result.status = "failed"
            await self.history.finish(result, f"{type(exc).__name__}: {exc}")
            self._count(export, result, time.perf_counter() - begun)
            raise RunFailed(f"export {export.name!r} regeneration failed: {redact(str(exc))}") from exc
        self._count(export, result, time.perf_counter() - begun)
        return result

    @staticmethod
    def _period_where(
        storage_id: uuid.UUID, snapshot: Snapshot, definition: ExportDefinition, start: datetime, end: datetime
    ) -> str:
        """A typed event-time column narrows the scan in Postgres; other types are filtered after reading."""
        column = snapshot.models[storage_id].by_key.get(definition.event_time_column)
        if column is None or column.type not in (ColumnType.DATETIME, ColumnType.DATE):
            return "TRUE"
        name = quote_ident(column.name)
        if column.type is ColumnType.DATE:  # days that overlap the period; the exact bounds are applied after
            return f"{name} >= '{start.date().isoformat()}'::date AND {name} <= '{end.date().isoformat()}'::date"
        return f"{name} >= '{start.isoformat()}'::timestamptz AND {name} < '{end.isoformat()}'::timestamptz"

    def _count(self, export: Export, result: RunResult, seconds: float) -> None:
        name = export.name
        metrics.RUNS.labels(name, result.kind, result.status).inc()
        metrics.DURATION.labels(name, result.kind).observe(seconds)
        if result.status == "failed":
            return
        metrics.FILES.labels(name).inc(len(result.files))
        metrics.ROWS.labels(name).inc(result.rows)
        metrics.BYTES.labels(name).inc(result.bytes)
        metrics.DROPPED.labels(name, "privacy").inc(result.dropped_privacy)
        metrics.UNKNOWN_TIME.labels(name).inc(result.unknown_time)
        if result.kind == "live":
            metrics.LAST_SUCCESS.labels(name).set(time.time())
