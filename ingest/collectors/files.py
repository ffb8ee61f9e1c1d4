"""CSV and NDJSON files on any file store (SFTP, FTP, FTPS, S3): chunk-wise record parsing of what a store reads."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import posixpath
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import TypeAdapter

from headrace.filestores import FileStore, FileStoreError
from headrace.models.inference import parse_text
from ingest.collectors.source_models import FileSource

# The longest record (an NDJSON line, a CSV row) a parser holds while waiting for its end: as large as a push
# body may be by default, so a file without newlines cannot grow a parser's buffer without bound.
MAX_RECORD_BYTES = 10 * 1024 * 1024
# JSON's whitespace besides LF: a line holding only these is blank. str.strip() would also take U+2028, U+0085…
_BLANK = " \t\r"


# What the file store raises is what a file source raises: one error for listing, reading and parsing.
FileSourceError = FileStoreError


class RecordTooLarge(FileSourceError):
    """A record runs past the longest a parser holds; `limit` says how long that is."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def source_from_url(url: str, **fields: Any) -> FileSource:
    """sftp://, ftp://, ftps://user@host:port/path or s3://bucket/key (any may hold a glob) as a file source, with more
    fields."""
    return TypeAdapter(FileSource).validate_python({"kind": urlsplit(url).scheme, "url": url, **fields})


def format_of(path: str, default: str = "csv") -> str:
    leaf = posixpath.basename(path).lower().removesuffix(".gz")
    if leaf.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    if leaf.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return default


class RecordParser:
    """Turns a file's bytes, fed chunk by chunk, into records; memory is bounded by the chunk and the longest record.

    Records end at LF alone (outside quoted CSV fields): U+2028, U+2029 and U+0085 are ordinary characters.
    """

    def __init__(
        self, file_format: str, delimiter: str = ",", name: str = "file", max_record_bytes: int = MAX_RECORD_BYTES
    ) -> None:
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise FileSourceError("the CSV delimiter is one character other than a quote or a line break")
        self.format = file_format
        self.delimiter = delimiter
        self.name = name
        self.max_record_bytes = max_record_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._pending = ""
        self._header: list[str] | None = None
        self._line = 0

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        try:
            text = self._pending + self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise FileSourceError(f"{self.name}: not UTF-8 near line {self._line + 1}: {exc}") from exc
        cut = self._complete_prefix(text)
        self._pending = text[cut:]
        if len(self._pending) > self.max_record_bytes:  # characters, each at least a byte
            raise RecordTooLarge(
                f"{self.name}: record {self._line + 1} is longer than {self.max_record_bytes} bytes",
                self.max_record_bytes,
            )
        return self._parse(text[:cut])

    @property
    def pending(self) -> int:
        """Characters held of a record whose end has not arrived yet."""
        return len(self._pending)

    def close(self) -> list[dict[str, Any]]:
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if text and not text.endswith("\n"):
            text += "\n"
        return self._parse(text)

    def _complete_prefix(self, text: str) -> int:
        """Where the last complete record ends: after a newline outside any quoted CSV field."""
        if self.format != "csv":
            return text.rfind("\n") + 1
        cut, quotes, start = 0, 0, 0
        while True:
            newline = text.find("\n", start)
            if newline < 0:
                return cut
            # RFC 4180 escapes a quote by doubling it, so an even count means no field is left open.
            quotes += text.count('"', start, newline)
            if quotes % 2 == 0:
                cut = newline + 1
            start = newline + 1

    def _parse(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        if self.format == "ndjson":
            return self._parse_ndjson(text)
        records = []
        reader = csv.reader(io.StringIO(text), delimiter=self.delimiter)
        for cells in reader:
            self._line += 1
            if not cells:
                continue
            if self._header is None:
                self._header = [c.strip() for c in cells]
                continue
            if len(cells) > len(self._header):
                raise FileSourceError(
                    f"{self.name}: record {self._line} has {len(cells)} cells for {len(self._header)} columns"
                )
            records.append({key: parse_text(cell) for key, cell in zip(self._header, cells, strict=False)})
        return records

    def _parse_ndjson(self, text: str) -> list[dict[str, Any]]:
        records = []
        # `text` ends with LF (see _complete_prefix), so the last piece of the split is empty and not a line.
        for line in text.split("\n")[:-1]:
            self._line += 1
            if not line.strip(_BLANK):
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise FileSourceError(f"{self.name}: line {self._line} is not JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise FileSourceError(f"{self.name}: line {self._line} is not a JSON object")
            records.append(record)
        return records


async def parse_file(
    store: FileStore,
    path: str,
    file_format: str,
    delimiter: str = ",",
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """A file's records, a chunk's worth at a time; parsing runs in a thread, off the event loop."""
    parser = RecordParser(file_format, delimiter, path)
    # Closed at once when parsing fails: an FTP store's one control connection is busy until its read ends.
    async with aclosing(store.read(path)) as chunks:
        async for chunk in chunks:
            records = await asyncio.to_thread(parser.feed, chunk)
            if progress is not None:
                progress(len(chunk))
            if records:
                yield records
    tail = parser.close()
    if tail:
        yield tail
