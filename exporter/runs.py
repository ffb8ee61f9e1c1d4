"""Export runs: read the rows topics from the committed positions to the end seen at the start, write partitioned
gzip files, deliver them, then the manifest, then the report, and only then commit the positions.

A run that fails leaves its planned range in headrace.export_runs; the next run starting from the same
positions replays exactly that range under the same report stamp, so it rewrites the same file names
and no row can end up in two reported files.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from exporter import metrics
from exporter.definitions import Export, ExportDefinition
from exporter.destinations import Destination, open_destination
from exporter.formats import EXTENSIONS, FileWriter, WrittenFile, make_writer
from exporter.partitioning import Interval, Layout, file_guid, interval_of, parse_event_time, report_stamp
from headrace.catalog import Catalog, Storage
from headrace.events import REASON_HEADER, SOURCE_HEADER
from headrace.kafka import Topics, consumer, producer
from headrace.models import ColumnType
from headrace.postgres import quote_ident
from headrace.query import stored_columns, stored_row
from headrace.rows import SOURCE_OFFSET, SOURCE_PARTITION, decode_row, encode_row, is_duplicate
from headrace.settings import Settings

log = logging.getLogger(__name__)

STORAGE_FIELD = "_storage"  # which storage a row came from; exports may mix several
SYSTEM_OUTPUT = (STORAGE_FIELD, "_event_id", "_received_at", "_inserted_at")
INTERNAL_FIELDS = frozenset({SOURCE_PARTITION, SOURCE_OFFSET})
FETCH_ROWS = 5000
# Beyond this many files open at once the oldest is closed, so memory stays flat however scattered the event times.
MAX_OPEN_FILES = 32
# A partition that yields nothing for this long before its planned end fails the run (to be retried whole).
STALL_SECONDS = 60.0


class RunInProgress(RuntimeError):
    """Another run of the same export holds its lock."""


class RunFailed(RuntimeError):
    """A run stopped before its report; nothing was committed and its rows go out with the next run."""


@dataclass
class RunResult:
    run_id: uuid.UUID
    export: str
    kind: str
    status: str  # succeeded, empty or failed
    started_at: datetime
    files: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    dropped_privacy: int = 0
    unknown_time: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    report: str | None = None
    manifest: str | None = None
    range: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "export": self.export,
            "kind": self.kind,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "files": self.files,
            "rows": self.rows,
            "bytes": self.bytes,
            "dropped_privacy": self.dropped_privacy,
            "unknown_time": self.unknown_time,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "report": self.report,
            "manifest": self.manifest,
            "range": self.range,
        }


class RowShaper:
    """What of a row goes out: the privacy filter, the property selection, and the row's interval."""

    def __init__(self, definition: ExportDefinition) -> None:
        self.definition = definition
        selection = definition.properties
        self.mode = selection.mode
        self.names = frozenset(selection.names)

    def selected(self, key: str) -> bool:
        if self.mode == "include":
            return key in self.names
        if self.mode == "exclude":
            return key not in self.names
        return True

    def consented(self, row: dict[str, Any]) -> bool:
        """False only when the consent property says false; a missing or null consent is not a refusal."""
        value = row.get(self.definition.consent_column)
        return not (value is False or (isinstance(value, str) and value.strip().lower() == "false"))

    def interval(self, row: dict[str, Any]) -> Interval:
        return interval_of(
            parse_event_time(row.get(self.definition.event_time_column)), self.definition.partition_level
        )

    def shape(self, row: dict[str, Any], storage: str) -> dict[str, Any]:
        out: dict[str, Any] = {STORAGE_FIELD: storage} if self.selected(STORAGE_FIELD) else {}
        for key, value in row.items():
            if key not in INTERNAL_FIELDS and self.selected(key):
                out[key] = value
        return out

    def known_columns(self, models: Iterable[list[str]]) -> list[str]:
        """The columns every file starts with: system properties, then each source model's keys, as selected."""
        columns = dict.fromkeys(k for k in SYSTEM_OUTPUT if self.selected(k))
        for keys in models:
            columns.update(dict.fromkeys(k for k in keys if self.selected(k)))
        return list(columns)


@dataclass
class DeliveredFile:
    name: str
    interval: Interval
    written: WrittenFile

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval": self.interval.key,
            "rows": self.written.rows,
            "bytes": self.written.bytes,
            "sha256": self.written.sha256,
        }


class RunFiles:
    """The files of one run: one open writer per interval, a new file at max rows, closed files ready to deliver.

    Used from one worker thread at a time (the run hands each batch to asyncio.to_thread and awaits it).
    """

    def __init__(
        self,
        export: Export,
        shaper: RowShaper,
        layout: Layout,
        run_key: str,
        spool: Path,
        known_columns: list[str],
    ) -> None:
        self.export = export
        self.definition = export.definition
        self.shaper = shaper
        self.layout = layout
        self.run_key = run_key
        self.spool = spool
        self.known_columns = known_columns
        self.open: dict[Interval, tuple[str, FileWriter]] = {}
        self.numbers: dict[Interval, int] = {}
        self.ready: list[DeliveredFile] = []
        self.dropped_privacy = 0
        self.unknown_time = 0
        self.duplicates = 0
        self.dead: list[tuple[ConsumerRecord, str]] = []

    def _writer(self, interval: Interval) -> FileWriter:
        entry = self.open.get(interval)
        if entry is not None:
            return entry[1]
        if len(self.open) >= MAX_OPEN_FILES:
            self._close(next(iter(self.open)))
        number = self.numbers.get(interval, 0) + 1
        self.numbers[interval] = number
        guid = file_guid(self.export.id, self.run_key, interval)
        name = self.layout.data_file(interval, guid, number, EXTENSIONS[self.definition.format])
        writer = make_writer(
            self.definition.format,
            self.spool / f"{uuid.uuid4().hex}.part",
            self.known_columns,
            separator=self.definition.csv_separator,
            header=self.definition.csv_header,
        )
        self.open[interval] = (name, writer)
        return writer

    def _close(self, interval: Interval) -> None:
        name, writer = self.open.pop(interval)
        self.ready.append(DeliveredFile(name, interval, writer.finish()))

    def add(self, row: dict[str, Any], storage: str) -> None:
        """Route one row (as the rows topic spells it) to its interval's file, unless the privacy filter drops it."""
        definition = self.definition
        if definition.privacy_filter and not self.shaper.consented(row):
            self.dropped_privacy += 1
            return
        interval = self.shaper.interval(row)
        if interval.date is None:
            self.unknown_time += 1
        out = self.shaper.shape(row, storage)
        writer = self._writer(interval)
        if not writer.add(out):
            self._close(interval)
            writer = self._writer(interval)
            if not writer.add(out):
                raise AssertionError("a fresh file refused a row")
        if writer.rows >= definition.max_rows_per_file:
            self._close(interval)

    def take_records(self, storage: str, records: list[ConsumerRecord], watermark: int | None) -> int | None:
        """Add a batch of one rows partition's messages; returns the new duplicate watermark."""
        for record in records:
            try:
                row = decode_row(record.value)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, TypeError) as exc:
                self.dead.append((record, f"undecodable rows message: {exc}"))
                continue
            source_offset = row.get(SOURCE_OFFSET)
            if isinstance(source_offset, int):
                if is_duplicate(row, watermark):
                    self.duplicates += 1
                    continue
                watermark = source_offset
            self.add(row, storage)
        return watermark

    def take_ready(self) -> list[DeliveredFile]:
        ready, self.ready = self.ready, []
        return ready

    def finish(self) -> list[DeliveredFile]:
        for interval in list(self.open):
            self._close(interval)
        return self.take_ready()

    def abandon(self) -> None:
        for _, writer in self.open.values():
            writer.abandon()
        self.open.clear()


@dataclass
class Plan:
    """What a live run reads: per rows partition, [start, end) offsets and the watermark at start."""

    run_id: uuid.UUID
    started_at: datetime
    stamp_at: datetime  # the report's timestamp; a replayed range keeps the original one
    ranges: dict[TopicPartition, tuple[int, int]]
    watermarks: dict[TopicPartition, int | None]
    storages: dict[str, Storage]  # by rows topic

    def range_json(self) -> dict[str, dict[str, list[int]]]:
        out: dict[str, dict[str, list[int]]] = {}
        for tp, (start, end) in sorted(self.ranges.items()):
            out.setdefault(tp.topic, {})[str(tp.partition)] = [start, end]
        return out

    @property
    def run_key(self) -> str:
        return orjson.dumps(self.range_json(), option=orjson.OPT_SORT_KEYS).decode()


def _lock_key(export: Export) -> int:
    return uuid.uuid5(export.id, "run").int % (2**63)


class ExportRunner:
    """Runs exports (live and regenerated) against one pool and one Kafka cluster."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.catalog = Catalog(pool)
        self.topics = Topics(settings.topic_prefix)

    # -- shared plumbing -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _exclusive(self, export: Export) -> AsyncIterator[None]:
        """One run of an export at a time, across every exporter instance, held by a session advisory lock."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(export)):
                raise RunInProgress(f"export {export.name!r} is already running")
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(export))

    async def _sources(self, definition: ExportDefinition) -> list[Storage]:
        if definition.sources == "all":
            return await self.catalog.list()
        return [await self.catalog.get(name) for name in definition.sources]

    async def _known_columns(self, shaper: RowShaper, storages: list[Storage]) -> list[str]:
        models = [[c.key for c in (await self.catalog.model(s.id)).columns] for s in storages]
        return shaper.known_columns(models)

    @asynccontextmanager
    async def _spool(self) -> AsyncIterator[Path]:
        directory = Path(tempfile.mkdtemp(prefix="headrace-export-", dir=self.settings.exporter_spool_dir))
        try:
            yield directory
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _deliver(
        self, destination: Destination, files: list[DeliveredFile], delivered: list[DeliveredFile]
    ) -> None:
        for item in files:
            await destination.put_file(item.written.path, item.name)
            item.written.path.unlink(missing_ok=True)
            delivered.append(item)

    async def _record_start(
        self,
        export: Export,
        run_id: uuid.UUID,
        kind: str,
        trigger: str,
        started: datetime,
        range_json: dict[str, Any] | None,
    ) -> None:
        await self.pool.execute(
            "INSERT INTO headrace.export_runs (id, export_id, kind, trigger, status, started_at, range)"
            " VALUES ($1, $2, $3, $4, 'running', $5, $6)",
            run_id,
            export.id,
            kind,
            trigger,
            started,
            range_json,
        )

    async def _record_end(
        self, conn: asyncpg.Connection | asyncpg.Pool, result: RunResult, error: str | None = None
    ) -> None:
        await conn.execute(
            "UPDATE headrace.export_runs SET status = $2, finished_at = now(), files = $3, rows = $4, bytes = $5,"
            " dropped_privacy = $6, unknown_time = $7, report = $8, error = $9 WHERE id = $1",
            result.run_id,
            result.status,
            len(result.files),
            result.rows,
            result.bytes,
            result.dropped_privacy,
            result.unknown_time,
            result.report,
            error,
        )

    async def _report(
        self,
        destination: Destination,
        layout: Layout,
        result: RunResult,
        delivered: list[DeliveredFile],
        stamp_at: datetime,
        extra: dict[str, Any],
    ) -> None:
        """The manifest, then the report: the report is the last object a run writes."""
        stamp = report_stamp(stamp_at)
        result.files = [d.to_json() for d in delivered]
        result.rows = sum(d.written.rows for d in delivered)
        result.bytes = sum(d.written.bytes for d in delivered)
        manifest = {
            "export": result.export,
            "run_id": str(result.run_id),
            "kind": result.kind,
            "started_at": result.started_at.isoformat(),
            "range": result.range,
            "files": result.files,
            "rows": result.rows,
            "bytes": result.bytes,
            "dropped_privacy": result.dropped_privacy,
            "unknown_event_time": result.unknown_time,
            "duplicates_skipped": result.duplicates,
        } | extra
        result.manifest = layout.manifest(stamp)
        result.report = layout.report(stamp)
        await destination.put_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2), result.manifest)
        await destination.put_bytes("".join(f"{d.name}\n" for d in delivered).encode(), result.report)

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
        metrics.DROPPED.labels(name, "duplicate").inc(result.duplicates)
        metrics.UNKNOWN_TIME.labels(name).inc(result.unknown_time)
        metrics.DEAD_LETTERS.labels(name).inc(result.dead_letters)
        if result.kind == "live":
            metrics.LAST_SUCCESS.labels(name).set(time.time())

    async def _dead_letter(self, topic: str, dead: list[tuple[ConsumerRecord, str]]) -> None:
        """Rows messages that are not JSON go to the dead-letter topic with their reason, never silently away."""
        sender = producer(self.settings)
        await sender.start()
        try:
            for record, reason in dead:
                headers = [
                    (REASON_HEADER, reason.encode()),
                    (SOURCE_HEADER, f"{topic}:{record.partition}:{record.offset}".encode()),
                ]
                await sender.send_and_wait(self.topics.dead_letter, value=record.value, key=record.key, headers=headers)
        finally:
            await sender.stop()

    # -- live runs --------------------------------------------------------------------------------------

    async def run(self, export: Export, trigger: str = "manual", destination: Destination | None = None) -> RunResult:
        """One live run now: everything inserted since the last successful run, delivered and reported."""
        begun = time.perf_counter()
        async with self._exclusive(export):
            # Bigger fetches than the default 1 MiB per partition: a run reads partitions one after the other.
            reader = consumer(
                self.settings, group_id=None, max_partition_fetch_bytes=16 * 2**20, fetch_max_bytes=64 * 2**20
            )
            await reader.start()
            try:
                plan = await self._plan(export, reader)
                result = RunResult(
                    plan.run_id, export.name, "live", "running", plan.started_at, range=plan.range_json()
                )
                await self._record_start(export, plan.run_id, "live", trigger, plan.started_at, result.range)
                try:
                    await self._execute(export, plan, reader, result, destination)
                except Exception as exc:
                    result.status = "failed"
                    await self._record_end(self.pool, result, f"{type(exc).__name__}: {exc}")
                    self._count(export, result, time.perf_counter() - begun)
                    log.warning("export run failed", extra={"export": export.name, "error": str(exc)})
                    raise RunFailed(f"export {export.name!r} run failed: {exc}") from exc
            finally:
                await reader.stop()
        self._count(export, result, time.perf_counter() - begun)
        log.info(
            "export run",
            extra={"export": export.name, "status": result.status, "rows": result.rows, "files": len(result.files)},
        )
        return result

    async def _plan(self, export: Export, reader: Any) -> Plan:
        storages = await self._sources(export.definition)
        by_topic = {self.topics.rows(s.name): s for s in storages}
        existing = await reader.topics()
        tps = [
            TopicPartition(topic, p)
            for topic in sorted(by_topic)
            if topic in existing
            for p in sorted(reader.partitions_for_topic(topic) or ())
        ]
        started = datetime.now(UTC)
        run_id = uuid.uuid4()
        if not tps:
            return Plan(run_id, started, started, {}, {}, by_topic)
        beginnings = await reader.beginning_offsets(tps)
        ends = await self._true_ends(reader, await reader.end_offsets(tps), beginnings)
        rows = await self.pool.fetch(
            "SELECT topic, partition, next_offset, last_source_offset FROM headrace.export_positions"
            " WHERE export_id = $1",
            export.id,
        )
        committed = {TopicPartition(r["topic"], r["partition"]): r for r in rows}
        starts: dict[TopicPartition, int] = {}
        watermarks: dict[TopicPartition, int | None] = {}
        for tp in tps:
            position = committed.get(tp)
            start = position["next_offset"] if position else beginnings[tp]
            if start < beginnings[tp]:
                log.warning(
                    "rows expired before export",
                    extra={
                        "export": export.name,
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "lost_until": beginnings[tp],
                    },
                )
                start = beginnings[tp]
            starts[tp] = start
            watermarks[tp] = position["last_source_offset"] if position else None
        ranges = {tp: (starts[tp], ends[tp]) for tp in tps if ends[tp] > starts[tp]}
        stamp_at = started
        replay = await self._unfinished_range(export, starts)
        if replay is not None:
            ranges, stamp_at = replay
        return Plan(run_id, started, stamp_at, ranges, watermarks, by_topic)

    async def _true_ends(
        self, reader: Any, reported: dict[TopicPartition, int], beginnings: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """The end offsets, confirmed by reading from the last reported offset.

        Tansu answers ListOffsets(latest) with the last record batch's base offset + 1, so the other records
        of a multi-record batch would stay unseen; fetching from there shows where the data really ends.
        """
        ends = dict(reported)
        probed = {tp: end for tp, end in reported.items() if end > beginnings[tp]}
        if not probed:
            return ends
        reader.assign(list(probed))
        for tp, end in probed.items():
            reader.seek(tp, end - 1)
        waiting = set(probed)
        deadline = asyncio.get_running_loop().time() + 5
        while waiting and asyncio.get_running_loop().time() < deadline:
            batch = await reader.getmany(*waiting, timeout_ms=500, max_records=FETCH_ROWS)
            for tp, records in batch.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    waiting.discard(tp)
        return ends

    async def _unfinished_range(
        self, export: Export, starts: dict[TopicPartition, int]
    ) -> tuple[dict[TopicPartition, tuple[int, int]], datetime] | None:
        """The range of the latest unfinished run, when it started where we start now: replaying it keeps names."""
        row = await self.pool.fetchrow(
            "SELECT status, started_at, range FROM headrace.export_runs WHERE export_id = $1 AND kind = 'live'"
            " AND status IN ('running', 'failed', 'succeeded', 'empty') ORDER BY started_at DESC LIMIT 1",
            export.id,
        )
        if row is None or row["status"] not in ("running", "failed") or not row["range"]:
            return None
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for topic, partitions in row["range"].items():
            for partition, (start, end) in partitions.items():
                tp = TopicPartition(topic, int(partition))
                if starts.get(tp) != start:
                    return None
                ranges[tp] = (start, end)
        return ranges, row["started_at"]

    async def _execute(
        self, export: Export, plan: Plan, reader: Any, result: RunResult, destination: Destination | None
    ) -> None:
        definition = export.definition
        if not plan.ranges:
            result.status = "empty"
            await self._record_end(self.pool, result)
            return
        shaper = RowShaper(definition)
        layout = Layout(definition.destination.kind, definition.destination.folder, export.name)
        known = await self._known_columns(shaper, list(plan.storages.values()))
        watermarks = dict(plan.watermarks)
        delivered: list[DeliveredFile] = []
        async with self._spool() as spool, destination or open_destination(definition.destination) as target:
            files = RunFiles(export, shaper, layout, plan.run_key, spool, known)
            try:
                for tp, (start, end) in sorted(plan.ranges.items()):
                    storage = plan.storages[tp.topic].name
                    reader.assign([tp])
                    reader.seek(tp, start)
                    stalled_since = asyncio.get_running_loop().time()
                    while await reader.position(tp) < end:
                        batch = await reader.getmany(tp, timeout_ms=1000, max_records=FETCH_ROWS)
                        records = [r for r in batch.get(tp, ()) if r.offset < end]
                        if not records and asyncio.get_running_loop().time() - stalled_since > STALL_SECONDS:
                            raise TimeoutError(f"{tp.topic}[{tp.partition}] gave nothing below offset {end}")
                        if records:
                            stalled_since = asyncio.get_running_loop().time()
                            watermarks[tp] = await asyncio.to_thread(
                                files.take_records, storage, records, watermarks[tp]
                            )
                        if files.dead:
                            dead, files.dead = files.dead, []
                            result.dead_letters += len(dead)
                            await self._dead_letter(tp.topic, dead)
                        await self._deliver(target, files.take_ready(), delivered)
                await self._deliver(target, await asyncio.to_thread(files.finish), delivered)
            except BaseException:
                await asyncio.to_thread(files.abandon)
                raise
            result.dropped_privacy, result.unknown_time = files.dropped_privacy, files.unknown_time
            result.duplicates = files.duplicates
            result.status = "succeeded"
            await self._report(target, layout, result, delivered, plan.stamp_at, {"export_id": str(export.id)})
        # Positions move only now, after the report: a crash before this line replays the same range.
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO headrace.export_positions (export_id, topic, partition, next_offset, last_source_offset)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (export_id, topic, partition) DO UPDATE"
                " SET next_offset = excluded.next_offset, last_source_offset = excluded.last_source_offset,"
                " updated_at = now()",
                [(export.id, tp.topic, tp.partition, end, watermarks[tp]) for tp, (_, end) in plan.ranges.items()],
            )
            await self._record_end(conn, result)

    # -- regeneration ------------------------------------------------------------------------------------

    async def regenerate(
        self,
        export: Export,
        start: datetime,
        end: datetime,
        folder: str,
        destination: Destination | None = None,
        trigger: str = "manual",
    ) -> RunResult:
        """Re-export rows whose event time is in [start, end) from the storages' tables into `folder`.

        Same partitioning and naming as the live files, its own manifest and report; live positions are untouched.
        """
        begun = time.perf_counter()
        definition = export.definition
        run_id = uuid.uuid4()
        started = datetime.now(UTC)
        period = {"from": start.isoformat(), "to": end.isoformat(), "folder": folder}
        result = RunResult(run_id, export.name, "regenerate", "running", started, range=period)
        await self._record_start(export, run_id, "regenerate", trigger, started, period)
        shaper = RowShaper(definition)
        layout = Layout(definition.destination.kind, folder, export.name)
        delivered: list[DeliveredFile] = []
        try:
            storages = await self._sources(definition)
            known = await self._known_columns(shaper, storages)
            run_key = "regenerate|" + orjson.dumps(period, option=orjson.OPT_SORT_KEYS).decode()
            async with self._spool() as spool, destination or open_destination(definition.destination) as target:
                files = RunFiles(export, shaper, layout, run_key, spool, known)
                try:
                    for storage in storages:
                        async for chunk in self._table_rows(storage, definition.event_time_column, start, end):
                            await asyncio.to_thread(self._take_table_rows, files, storage.name, chunk, start, end)
                            await self._deliver(target, files.take_ready(), delivered)
                    await self._deliver(target, await asyncio.to_thread(files.finish), delivered)
                except BaseException:
                    await asyncio.to_thread(files.abandon)
                    raise
                result.dropped_privacy, result.unknown_time = files.dropped_privacy, files.unknown_time
                result.status = "succeeded"
                await self._report(target, layout, result, delivered, started, {"export_id": str(export.id)})
            await self._record_end(self.pool, result)
        except Exception as exc:
            result.status = "failed"
            await self._record_end(self.pool, result, f"{type(exc).__name__}: {exc}")
            self._count(export, result, time.perf_counter() - begun)
            raise RunFailed(f"export {export.name!r} regeneration failed: {exc}") from exc
        self._count(export, result, time.perf_counter() - begun)
        return result

    def _take_table_rows(
        self, files: RunFiles, storage: str, chunk: list[dict[str, Any]], start: datetime, end: datetime
    ) -> None:
        column = files.definition.event_time_column
        for row in chunk:
            moment = parse_event_time(row.get(column))
            if moment is not None and start <= moment < end:
                files.add(row, storage)

    async def _table_rows(
        self, storage: Storage, event_time_key: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A storage's rows in insertion order, spelled as on the rows topic, a chunk at a time from a cursor."""
        model = await self.catalog.model(storage.id)
        sql = f"SELECT {stored_columns(model)} FROM {storage.qualified_table}"
        args: list[Any] = []
        event_column = model.by_key.get(event_time_key)
        if event_column is not None and event_column.type in (ColumnType.DATETIME, ColumnType.DATE):
            # A typed event-time column narrows the scan in Postgres; text ones are filtered row by row.
            sql += f" WHERE {quote_ident(event_column.name)} >= $1 AND {quote_ident(event_column.name)} < $2"
            args = [start, end] if event_column.type is ColumnType.DATETIME else [start.date(), end.date()]
            if event_column.type is ColumnType.DATE:
                sql = sql.replace(" < $2", " <= $2")
        sql += " ORDER BY _inserted_at, _event_id"
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = await conn.cursor(sql, *args)
            while True:
                records = await cursor.fetch(FETCH_ROWS)
                if not records:
                    return
                # Through the rows-topic encoding, so regenerated values are spelled as the live ones.
                yield [decode_row(encode_row(stored_row(record, model))) for record in records]
