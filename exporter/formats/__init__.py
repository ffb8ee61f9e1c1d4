"""Export file formats: a Format readies whole batches once, its FileWriters spool one interval's file each."""

from __future__ import annotations

import hashlib
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from exporter.definitions import ExportDefinition

# zlib's own default level: most of level 9's size at a third of its time (Arrow's gzip streams use 9).
GZIP_LEVEL = 6


@dataclass(frozen=True)
class WrittenFile:
    path: Path  # the local spool file
    rows: int
    bytes: int
    sha256: str


class GzipSink:
    """A gzip stream into a file, hashing the compressed bytes on the way; zlib works without the GIL."""

    def __init__(self, path: Path) -> None:
        self.file: BinaryIO = open(path, "wb")
        # wbits 31: a gzip header with mtime 0, so a retried run writes byte-identical files (the same sha256).
        self.zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.digest = hashlib.sha256()
        self.size = 0

    def _out(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.size += len(data)
            self.file.write(data)

    def write(self, data: bytes | memoryview | pa.Buffer) -> None:
        self._out(self.zlib.compress(data))

    def close(self) -> tuple[int, str]:
        self._out(self.zlib.flush())
        self.file.close()
        return self.size, self.digest.hexdigest()

    def abandon(self) -> None:
        self.file.close()


class FileWriter(ABC):
    """One spool file: pieces of readied batches in, a finished file out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0

    @abstractmethod
    def write(self, piece: pa.RecordBatch) -> None: ...

    @abstractmethod
    def finish(self) -> WrittenFile: ...

    @abstractmethod
    def abandon(self) -> None:
        """Close and delete the spool file (the run failed)."""

    @property
    def buffered_bytes(self) -> int:
        """Memory this writer holds (Parquet gathers row groups, and writes them aside); streams hold next to none."""
        return 0

    @property
    def flushable_bytes(self) -> int:
        """Of buffered_bytes, what flush() would start writing."""
        return 0

    def flush(self) -> None:  # noqa: B027 - streams have nothing to flush
        """Start writing out what is held back."""

    def settle(self) -> None:  # noqa: B027 - streams write as they go
        """Wait for what is being written aside."""


class GzipFileWriter(FileWriter):
    """A text format streamed through gzip: each piece is encoded and compressed as it comes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.sink = GzipSink(path)

    @abstractmethod
    def encode(self, piece: pa.RecordBatch) -> bytes | memoryview | pa.Buffer: ...

    def write(self, piece: pa.RecordBatch) -> None:
        self.sink.write(self.encode(piece))
        self.rows += len(piece)

    def finish(self) -> WrittenFile:
        size, digest = self.sink.close()
        return WrittenFile(self.path, self.rows, size, digest)

    def abandon(self) -> None:
        self.sink.abandon()
        self.path.unlink(missing_ok=True)


class Format(ABC):
    """How a run's files are written: `prepare` once per batch (before it is split by interval), then writers."""

    suffix: str  # the file name's extension: csv.gz, json.gz, parquet
    holds_pieces = False  # whether writers keep pieces after write() returns (then they must be compact copies)

    def __init__(self, definition: ExportDefinition, schema: pa.Schema) -> None:
        self.definition = definition
        self.schema = schema

    def prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch

    @abstractmethod
    def open(self, path: Path) -> FileWriter: ...


def make_format(definition: ExportDefinition, schema: pa.Schema) -> Format:
    if definition.format == "csv":
        from exporter.formats.csv import CsvFormat

        return CsvFormat(definition, schema)
    if definition.format == "ndjson":
        from exporter.formats.ndjson import NdjsonFormat

        return NdjsonFormat(definition, schema)
    if definition.format == "parquet":
        from exporter.formats.parquet import ParquetFormat

        return ParquetFormat(definition, schema)
    raise ValueError(f"unknown format {definition.format!r}")
