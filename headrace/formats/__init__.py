"""File formats of exports and upload steps: a Format readies batches once, its FileWriters write one file each."""

from __future__ import annotations

import hashlib
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import pyarrow as pa

# zlib's own default level: most of level 9's size at a third of its time (Arrow's gzip streams use 9).
GZIP_LEVEL = 6


@dataclass(frozen=True)
class FileOptions:
    """How files are written: the format and its options (an export's definition, or an upload step's)."""

    format: Literal["csv", "ndjson", "parquet"]
    csv_separator: str = ","
    csv_header: bool = True
    gzip: bool = True  # text formats through gzip; Parquet compresses inside
    parquet_compression: Literal["gzip", "zstd", "snappy"] = "gzip"


@dataclass(frozen=True)
class WrittenFile:
    path: Path  # the local spool file
    rows: int
    bytes: int
    sha256: str


class FileSink:
    """A file, through gzip or not, hashing the bytes written on the way; zlib works without the GIL."""

    def __init__(self, path: Path, gzip: bool = True) -> None:
        self.file: BinaryIO = open(path, "wb")
        # wbits 31: a gzip header with mtime 0, so a retried run writes byte-identical files (the same sha256).
        self.zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzip else None
        self.digest = hashlib.sha256()
        self.size = 0

    def _out(self, data: bytes | memoryview | pa.Buffer) -> None:
        if len(data):
            self.digest.update(data)
            self.size += len(data)
            self.file.write(data)

    def write(self, data: bytes | memoryview | pa.Buffer) -> None:
        self._out(self.zlib.compress(data) if self.zlib is not None else data)

    def close(self) -> tuple[int, str]:
        if self.zlib is not None:
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


class TextFileWriter(FileWriter):
    """A text format streamed (through gzip, unless told not to): each piece is encoded as it comes."""

    def __init__(self, path: Path, gzip: bool = True) -> None:
        super().__init__(path)
        self.sink = FileSink(path, gzip)

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
    """How files are written: `prepare` once per batch (before it is split, by an export's intervals), then writers."""

    extension: str  # the file name's extension, before a compression's: csv, json, parquet
    holds_pieces = False  # whether writers keep pieces after write() returns (then they must be compact copies)

    def __init__(self, options: FileOptions, schema: pa.Schema) -> None:
        self.options = options
        self.schema = schema

    @property
    def suffix(self) -> str:
        """csv.gz, json.gz, parquet: the extension, and gzip's for a gzipped text format."""
        return f"{self.extension}.gz" if self.options.gzip and self.extension != "parquet" else self.extension

    def prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch

    @abstractmethod
    def open(self, path: Path) -> FileWriter: ...


def make_format(options: FileOptions, schema: pa.Schema) -> Format:
    if options.format == "csv":
        from headrace.formats.csv import CsvFormat

        return CsvFormat(options, schema)
    if options.format == "ndjson":
        from headrace.formats.ndjson import NdjsonFormat

        return NdjsonFormat(options, schema)
    if options.format == "parquet":
        from headrace.formats.parquet import ParquetFormat

        return ParquetFormat(options, schema)
    raise ValueError(f"unknown format {options.format!r}")
