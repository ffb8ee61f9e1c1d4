"""CSV and NDJSON files on SFTP or S3: listing by glob pattern, streaming reads, and chunk-wise record parsing."""

from __future__ import annotations

import asyncio
import codecs
import csv
import fnmatch
import io
import posixpath
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import asyncssh
import orjson

from headrace.models.inference import parse_text
from headrace.outbound import OutboundPolicy, OutboundRefused
from headrace.secrets import redact
from headrace.settings import Settings
from headrace.sftp import connect_sftp
from ingest.collectors.source_models import S3Source, SftpSource

if TYPE_CHECKING:  # from the type stubs of the dev extra (types-aioboto3[s3])
    from types_aiobotocore_s3 import S3Client

CHUNK_BYTES = 1024 * 1024
# The longest record (an NDJSON line, a CSV row) a parser holds while waiting for its end: as large as a push
# body may be by default, so a file without newlines cannot grow a parser's buffer without bound.
MAX_RECORD_BYTES = 10 * 1024 * 1024
# JSON's whitespace besides LF: a line holding only these is blank. str.strip() would also take U+2028, U+0085…
_BLANK = " \t\r"


class FileSourceError(RuntimeError):
    """A file could not be listed, read or parsed: the message names it."""


class RecordTooLarge(FileSourceError):
    """A record runs past the longest a parser holds; `limit` says how long that is."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    modified: float  # seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "modified": self.modified}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(data["path"], int(data["size"]), float(data["modified"]))


def _glob_prefix(pattern: str) -> str:
    """The literal part of a pattern before its first wildcard: what S3 can list by."""
    match = re.search(r"[*?\[]", pattern)
    return pattern if match is None else pattern[: match.start()]


class FileStore:
    """One connection to an SFTP server or an S3 bucket: list files by pattern, read one as chunks."""

    async def list(self, pattern: str) -> list[RemoteFile]:
        raise NotImplementedError

    def read(self, path: str) -> AsyncIterator[bytes]:
        raise NotImplementedError


class SftpStore(FileStore):
    def __init__(self, sftp: asyncssh.SFTPClient) -> None:
        self.sftp = sftp

    async def list(self, pattern: str) -> list[RemoteFile]:
        try:
            names = await self.sftp.glob(pattern)
        except asyncssh.SFTPNoSuchFile:
            return []
        except (OSError, asyncssh.Error) as exc:
            raise FileSourceError(f"cannot list {pattern}: {redact(str(exc))}") from exc
        found = []
        for name in names:
            assert isinstance(name, str)  # a str pattern globs to str names
            attrs = await self.sftp.stat(name)
            if attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                found.append(RemoteFile(name, attrs.size or 0, float(attrs.mtime or 0)))
        return found

    async def read(self, path: str) -> AsyncIterator[bytes]:
        try:
            async with self.sftp.open(path, "rb") as remote:
                while True:
                    # asyncssh types read() as returning any AnyStr: a file opened "rb" reads bytes.
                    chunk: bytes = await remote.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    yield chunk
        except (OSError, asyncssh.Error) as exc:
            raise FileSourceError(f"cannot read {path}: {redact(str(exc))}") from exc


class S3Store(FileStore):
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def list(self, pattern: str) -> list[RemoteFile]:
        pattern = pattern.lstrip("/")
        found = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=_glob_prefix(pattern)):
                for item in page.get("Contents", []):
                    if fnmatch.fnmatchcase(item["Key"], pattern):
                        found.append(RemoteFile(item["Key"], item["Size"], item["LastModified"].timestamp()))
        except Exception as exc:  # botocore's errors share no useful base beyond Exception
            raise FileSourceError(f"cannot list s3://{self.bucket}/{pattern}: {redact(str(exc))}") from exc
        return found

    async def read(self, path: str) -> AsyncIterator[bytes]:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=path.lstrip("/"))
            async for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                yield chunk
        except Exception as exc:
            raise FileSourceError(f"cannot read s3://{self.bucket}/{path}: {redact(str(exc))}") from exc


@asynccontextmanager
async def open_store(source: SftpSource | S3Source, settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[FileStore]:
    """A connection to the source's server, once its host passed the outbound policy (and, on SFTP, its host key)."""
    if isinstance(source, SftpSource):
        where = f"sftp://{source.user}@{source.host}:{source.port}"
        try:
            connection = await connect_sftp(source, settings, pool)
        except (OSError, asyncssh.Error, OutboundRefused) as exc:
            raise FileSourceError(f"cannot connect to {where}: {redact(str(exc))}") from None
        try:
            async with connection.start_sftp_client() as sftp:
                yield SftpStore(sftp)
        finally:
            connection.close()
            await connection.wait_closed()
        return
    try:
        await OutboundPolicy.from_settings(settings).check_url(source.endpoint_url)
    except (OSError, OutboundRefused) as exc:
        raise FileSourceError(f"cannot connect to the S3 endpoint: {redact(str(exc))}") from None
    async with source.client() as client:
        yield S3Store(client, source.bucket)


def source_from_url(url: str, **fields: Any) -> SftpSource | S3Source:
    """sftp://user@host:port/path or s3://bucket/key (either may hold a glob) as a file source, with more fields."""
    source = {"kind": urlsplit(url).scheme, "url": url, **fields}
    return SftpSource.model_validate(source) if source["kind"] == "sftp" else S3Source.model_validate(source)


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
    async for chunk in store.read(path):
        records = await asyncio.to_thread(parser.feed, chunk)
        if progress is not None:
            progress(len(chunk))
        if records:
            yield records
    tail = parser.close()
    if tail:
        yield tail
