"""Delivering a run: files uploaded as they close, leftovers of a failed attempt removed, manifest, then report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson

from exporter.destinations import Destination
from exporter.files import DoneFile
from exporter.history import RunResult
from exporter.partitioning import Layout, report_stamp

# Closed files waiting for upload; past this the run waits, so the spool folder cannot fill up without bound.
UPLOAD_QUEUE = 64
# Uploads at once: a run's files mostly close together at its end, and each upload is mostly waiting.
UPLOADERS = 4


class Delivery:
    """Uploads closed files in the background while the run goes on reading and writing."""

    def __init__(
        self, destination: Destination, layout: Layout, on_delivered: Callable[[str], Awaitable[None]]
    ) -> None:
        self.destination = destination
        self.layout = layout
        self.on_delivered = on_delivered
        self.delivered: list[DoneFile] = []
        self._queue: asyncio.Queue[DoneFile | None] = asyncio.Queue(UPLOAD_QUEUE)
        self._task: asyncio.Task[None] | None = None
        # The first upload goes alone: clients set up their connection pool on first use (aiobotocore loads the CA
        # bundle), and uploads racing to it would each set one up.
        self._first_done = asyncio.Event()
        self._first_taken = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._uploads(), name="export-upload")

    async def _uploads(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(UPLOADERS):
                    group.create_task(self._upload())
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None  # the first failure says what went wrong

    async def _upload(self) -> None:
        while (item := await self._queue.get()) is not None:
            first = not self._first_taken
            self._first_taken = True
            if not first:
                await self._first_done.wait()
            # Noted before the upload: a file that may be on the destination must be known to a replay.
            await self.on_delivered(item.name)
            try:
                await self.destination.put_file(item.written.path, item.name)
            finally:
                self._first_done.set()
            item.written.path.unlink(missing_ok=True)
            self.delivered.append(item)

    async def submit(self, files: list[DoneFile]) -> None:
        for item in files:
            self.check()
            await self._queue.put(item)

    def check(self) -> None:
        """Raise the upload's error, if it failed, so the run stops at once."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def drain(self) -> list[DoneFile]:
        """Wait for every submitted file to be delivered (or raise the upload's error)."""
        assert self._task is not None
        for _ in range(UPLOADERS):
            if self._task.done():
                break
            await self._queue.put(None)
        await self._task
        return self.delivered

    async def stop(self) -> None:
        """Stop uploading (the run failed); files not yet delivered stay in the spool, which is removed."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def remove_leftovers(self, earlier: list[str]) -> int:
        """Remove what an earlier attempt at the same range delivered and this one did not write again."""
        written = {d.name for d in self.delivered}
        stale = [name for name in earlier if name not in written]
        for name in stale:
            await self.destination.delete(name)
        return len(stale)

    async def report(self, result: RunResult, stamp_at: datetime, extra: dict[str, Any]) -> None:
        """The manifest, then the report: the report is the last object a run writes."""
        stamp = report_stamp(stamp_at)
        self.delivered.sort(key=lambda d: d.name)  # uploads finish in any order; reports list files by name
        result.files = [d.to_json() for d in self.delivered]
        result.rows = sum(d.written.rows for d in self.delivered)
        result.bytes = sum(d.written.bytes for d in self.delivered)
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
        } | extra
        result.manifest = self.layout.manifest(stamp)
        await self.destination.put_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2), result.manifest)
        result.report = self.layout.report(stamp)
        lines = "".join(f"{d.name}\n" for d in self.delivered)
        await self.destination.put_bytes(lines.encode(), result.report)
