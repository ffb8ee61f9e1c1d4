"""Parquet with its own compression (gzip by default, zstd or snappy): typed columns, row groups written aside."""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from headrace.formats import GZIP_LEVEL, FileWriter, Format, WrittenFile

# A row group goes out once this much is gathered for one file: small enough that encoding (in other threads) goes
# on while rows are read, big enough to compress well (smaller groups cost more CPU: 1 MiB ~ +20%).
ROW_GROUP_BYTES = 2 * 2**20
_LEVELS = {"gzip": GZIP_LEVEL, "zstd": 3, "snappy": None}
# Row groups are encoded and compressed here, beside the thread that reads and shapes the next rows (Arrow works
# without the GIL): files are independent, so two of them compress at once; one file's groups stay in order.
_ENCODERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="export-parquet")


class ParquetFormat(Format):
    extension = "parquet"
    holds_pieces = True

    def open(self, path: Path) -> ParquetFileWriter:
        return ParquetFileWriter(path, self.schema, self.options.parquet_compression)


class ParquetFileWriter(FileWriter):
    """The run's schema for every file (the model's types when the run started), so a file never changes types.

    Gathered rows become row groups in an encoder thread; a file's row groups queue up there in order, so the
    thread that shapes rows never waits for compression unless memory is short.
    """

    def __init__(self, path: Path, schema: pa.Schema, compression: str) -> None:
        super().__init__(path)
        self.writer = pq.ParquetWriter(
            path, schema, compression=compression, compression_level=_LEVELS[compression], write_statistics=True
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_bytes = 0
        self._lock = threading.Lock()
        self._queue: deque[pa.Table] = deque()
        self._queued_bytes = 0
        self._draining: Future[None] | None = None

    @property
    def buffered_bytes(self) -> int:
        return self.pending_bytes + self._queued_bytes

    @property
    def flushable_bytes(self) -> int:
        return self.pending_bytes

    def write(self, piece: pa.RecordBatch) -> None:
        # Pieces are compact copies (see group_by_interval): holding one keeps nothing else alive.
        self.pending.append(piece)
        self.pending_bytes += piece.nbytes
        self.rows += len(piece)
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Queue what is gathered as one row group, for an encoder thread."""
        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending)
        with self._lock:
            self._queue.append(table)
            self._queued_bytes += self.pending_bytes
            if self._draining is None:
                self._draining = _ENCODERS.submit(self._drain)
        self.pending, self.pending_bytes = [], 0

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = None
                    return
                table = self._queue.popleft()
            try:
                self.writer.write_table(table, row_group_size=len(table))
            except BaseException:
                with self._lock:
                    self._queue.clear()
                    self._queued_bytes = 0
                    self._draining = None
                raise
            with self._lock:
                self._queued_bytes -= table.nbytes

    def settle(self) -> None:
        """Wait for the row groups queued to be written (and raise an error of theirs, if any)."""
        with self._lock:
            draining = self._draining
        if draining is not None:
            draining.result()

    def finish(self) -> WrittenFile:
        self.flush()
        self.settle()
        self.writer.close()
        digest = hashlib.sha256()
        with open(self.path, "rb") as file:
            while chunk := file.read(2**20):
                digest.update(chunk)
        return WrittenFile(self.path, self.rows, self.path.stat().st_size, digest.hexdigest())

    def abandon(self) -> None:
        try:
            with self._lock:
                self._queue.clear()
                draining = self._draining
            if draining is not None:
                draining.exception()  # wait: the file must not be written while it is closed
            self.writer.close()
        finally:
            self.path.unlink(missing_ok=True)
