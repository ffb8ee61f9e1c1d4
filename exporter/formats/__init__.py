"""File writers that stream rows into a gzip-compressed file (CSV, NDJSON or Parquet inside), hashing as they go."""

from __future__ import annotations

import gzip
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# Level 6 is zlib's own default: most of level 9's size at a fraction of its time.
GZIP_LEVEL = 6


@dataclass(frozen=True)
class WrittenFile:
    path: Path  # the local temporary file
    rows: int
    bytes: int
    sha256: str


class HashingSink:
    """A write-only file that counts and hashes what passes through it on the way to disk."""

    def __init__(self, path: Path) -> None:
        self.file: BinaryIO = open(path, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class FileWriter(ABC):
    """Rows in, one gzip file out. `add` says False when a row cannot join this file (a new property, a wider type)."""

    extension: str

    def __init__(self, path: Path, known_columns: list[str]) -> None:
        self.path = path
        self.known_columns = known_columns
        self.sink = HashingSink(path)
        # mtime=0 keeps the bytes (and the sha256) the same when a retried run writes the same rows again.
        self.gzip = gzip.GzipFile(fileobj=self.sink, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)  # type: ignore[arg-type]
        self.rows = 0

    @abstractmethod
    def add(self, row: dict[str, Any]) -> bool: ...

    def _finish_content(self) -> None:  # noqa: B027 - most formats hold nothing back
        """Write whatever the format still holds back (buffers, footers)."""

    def finish(self) -> WrittenFile:
        self._finish_content()
        self.gzip.close()
        self.sink.close()
        return WrittenFile(self.path, self.rows, self.sink.size, self.sink.digest.hexdigest())

    def abandon(self) -> None:
        try:
            self.gzip.close()
        finally:
            self.sink.close()
            self.path.unlink(missing_ok=True)


def make_writer(
    fmt: str, path: Path, known_columns: list[str], *, separator: str = ",", header: bool = True
) -> FileWriter:
    if fmt == "csv":
        from exporter.formats.csv import CsvWriter

        return CsvWriter(path, known_columns, separator=separator, header=header)
    if fmt == "ndjson":
        from exporter.formats.ndjson import NdjsonWriter

        return NdjsonWriter(path, known_columns)
    if fmt == "parquet":
        from exporter.formats.parquet import ParquetFileWriter

        return ParquetFileWriter(path, known_columns)
    raise ValueError(f"unknown format {fmt!r}")


EXTENSIONS = {"csv": "csv", "ndjson": "json", "parquet": "parquet"}
