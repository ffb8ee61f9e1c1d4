"""Writing a run's files: one open file per interval, numbered files past max rows, a bound on open files and memory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from exporter.partitioning import UNKNOWN, Interval, Layout, file_guid, interval_at
from exporter.shaping import UNKNOWN_ID, Shaped, group_by_interval
from headrace.formats import FileWriter, Format, WrittenFile

# Beyond this many open files the oldest is closed (and the interval's next rows start a new number), so memory
# stays flat however scattered the event times are.
MAX_OPEN_FILES = 32
# Parquet writers gather row groups; past this much held in all of them, the largest is written out.
MAX_BUFFERED_BYTES = 64 * 2**20


@dataclass
class DoneFile:
    """A closed spool file and the name it is delivered under."""

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
    """The files of one run. Used from one worker thread at a time (each call is awaited before the next)."""

    def __init__(
        self,
        fmt: Format,
        layout: Layout,
        export_id: uuid.UUID,
        run_key: str,
        level: str,
        max_rows: int,
        spool: Path,
    ) -> None:
        self.format = fmt
        self.layout = layout
        self.export_id = export_id
        self.run_key = run_key
        self.level = level
        self.max_rows = max_rows
        self.spool = spool
        self.open: dict[int, tuple[str, Interval, FileWriter]] = {}
        self.numbers: dict[int, int] = {}
        self.intervals: dict[int, Interval] = {}
        self.ready: list[DoneFile] = []
        self.dropped_privacy = 0
        self.unknown_time = 0

    def interval(self, interval_id: int) -> Interval:
        found = self.intervals.get(interval_id)
        if found is None:
            found = UNKNOWN if interval_id == UNKNOWN_ID else interval_at(interval_id, self.level)
            self.intervals[interval_id] = found
        return found

    def add(self, shaped: Shaped) -> None:
        """Route a shaped batch's rows to their intervals' files, in the batch's order."""
        self.dropped_privacy += shaped.dropped_privacy
        self.unknown_time += shaped.unknown_time
        if len(shaped.batch) == 0:
            return
        ready = self.format.prepare(shaped.batch)
        for interval_id, piece in group_by_interval(ready, shaped.ids, compact=self.format.holds_pieces):
            self._write(interval_id, piece)
        self._bound_memory()

    def _write(self, interval_id: int, piece: pa.RecordBatch) -> None:
        while len(piece):
            writer = self._writer(interval_id)
            room = self.max_rows - writer.rows
            writer.write(piece.slice(0, room))
            piece = piece.slice(room)
            if writer.rows >= self.max_rows:
                self._close(interval_id)

    def _writer(self, interval_id: int) -> FileWriter:
        entry = self.open.get(interval_id)
        if entry is not None:
            return entry[2]
        if len(self.open) >= MAX_OPEN_FILES:
            self._close(next(iter(self.open)))
        number = self.numbers.get(interval_id, 0) + 1
        self.numbers[interval_id] = number
        interval = self.interval(interval_id)
        guid = file_guid(self.export_id, self.run_key, interval)
        name = self.layout.data_file(interval, guid, number, self.format.suffix)
        writer = self.format.open(self.spool / f"{uuid.uuid4().hex}.part")
        self.open[interval_id] = (name, interval, writer)
        return writer

    def _close(self, interval_id: int) -> None:
        name, interval, writer = self.open.pop(interval_id)
        self.ready.append(DoneFile(name, interval, writer.finish()))

    def _bound_memory(self) -> None:
        """Past half the bound, start writing the largest gathered row groups (aside, while this thread goes on);
        past the bound, wait for them."""
        writers = [entry[2] for entry in self.open.values()]
        if sum(w.buffered_bytes for w in writers) <= MAX_BUFFERED_BYTES // 2:
            return
        gathered = sum(w.flushable_bytes for w in writers)
        for writer in sorted(writers, key=lambda w: w.flushable_bytes, reverse=True):
            if gathered <= MAX_BUFFERED_BYTES // 4:
                break
            gathered -= writer.flushable_bytes
            writer.flush()
        if sum(w.buffered_bytes for w in writers) > MAX_BUFFERED_BYTES:
            for writer in writers:
                writer.settle()

    def flush_all(self) -> None:
        """Start writing every file's gathered rows (aside, two files at a time) before they close one by one."""
        for _, _, writer in self.open.values():
            writer.flush()

    def take_ready(self) -> list[DoneFile]:
        ready, self.ready = self.ready, []
        return ready

    def finish_one(self) -> list[DoneFile]:
        """Close one open file (and hand over what is ready): the caller uploads it while the next one closes."""
        if self.open:
            self._close(next(iter(self.open)))
        return self.take_ready()

    def abandon(self) -> None:
        for _, _, writer in self.open.values():
            writer.abandon()
        self.open.clear()
        for done in self.ready:
            done.written.path.unlink(missing_ok=True)
        self.ready.clear()
