"""Push bodies: content type and encoding checks, bounded reading and gunzip, and parsing into event records."""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ingest.budget import Reservation

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})
READ_CHUNK = 64 * 1024
# Postgres bigint bounds: a wider integer could not be stored without loss.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# orjson turns integers past 64 bits into floats silently; a run of 19+ digits is the only way to write one.
_LONG_DIGITS = re.compile(rb"\d{19,}")


@dataclass
class PushRefused(Exception):
    """A push answered with a 4xx/5xx status, a JSON error body and the metrics reason it counts under."""

    status: int
    reason: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None
    events: int = 1  # how many events the refusal counts as (1 when the body was never split into events)

    def __str__(self) -> str:
        return self.message


def body_format(request: web.Request) -> str:
    """'json' or 'ndjson' from the Content-Type, or a 415 refusal."""
    content_type = request.content_type.lower()
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise PushRefused(415, "unsupported_media_type", f"only UTF-8 bodies are accepted, not charset={charset}")
    if content_type in JSON_TYPES:
        return "json"
    if content_type in NDJSON_TYPES:
        return "ndjson"
    raise PushRefused(
        415,
        "unsupported_media_type",
        f"unsupported Content-Type {request.headers.get('Content-Type', '(none)')!r}:"
        " send application/json (an object or an array of objects) or application/x-ndjson",
    )


def _too_large(limit: int, what: str) -> PushRefused:
    return PushRefused(413, "too_large", f"the body is larger than {limit} bytes {what}", {"limit": limit})


class GzipInflater:
    """Inflates a gzip stream piece by piece and refuses (413) as soon as the output passes the limit.

    Never inflates more than limit + 1 bytes, so a gzip bomb costs no more memory than an honest large body.
    Concatenated gzip members (which `cat a.gz b.gz` makes) are one stream, as gunzip reads them.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.produced = 0
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        pieces = []
        while data:
            try:
                out = self._inflater.decompress(data, self.limit - self.produced + 1)
            except zlib.error as exc:
                raise PushRefused(400, "bad_gzip", f"the gzip body is corrupt: {exc}") from None
            self.produced += len(out)
            if self.produced > self.limit:
                raise _too_large(self.limit, "after gunzip")
            pieces.append(out)
            if self._inflater.eof:
                data = self._inflater.unused_data
                if data:
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                data = self._inflater.unconsumed_tail
        return b"".join(pieces)

    def finish(self) -> None:
        if not self._inflater.eof:
            raise PushRefused(400, "bad_gzip", "the gzip body is truncated")


async def read_body(request: web.Request, limit: int, reservation: Reservation) -> tuple[bytes, int]:
    """The decoded body and its size on the wire, reserving in-flight bytes as they arrive."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in GZIP_ENCODINGS:
        inflater: GzipInflater | None = GzipInflater(limit)
    elif encoding in IDENTITY_ENCODINGS:
        inflater = None
    else:
        raise PushRefused(415, "unsupported_media_type", f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, "as sent")
    pieces: list[bytes] = []
    wire = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        wire += len(chunk)
        if wire > limit:
            raise _too_large(limit, "as sent")
        reservation.take(len(chunk))
        if inflater is not None:
            chunk = inflater.feed(chunk)
            reservation.take(len(chunk))
        pieces.append(chunk)
    if inflater is not None:
        inflater.finish()
    return b"".join(pieces), wire


class _WideInteger(ValueError):
    pass


def _check_int(literal: str) -> int:
    value = int(literal)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _WideInteger(literal)
    return value


def _refuse_wide_integers(document: bytes, line: int | None = None) -> None:
    """400 when the document holds an integer outside the 64-bit range (orjson would have made it a float)."""
    if _LONG_DIGITS.search(document) is None:
        return
    try:
        json.loads(document, parse_int=_check_int)
    except _WideInteger as exc:
        where = {} if line is None else {"line": line}
        raise PushRefused(
            400,
            "integer_out_of_range",
            f"integer {str(exc)[:40]} is outside the 64-bit range; send it as a string to keep every digit",
            where,
        ) from None


def _malformed(exc: orjson.JSONDecodeError, offset: int = 0, line: int | None = None) -> PushRefused:
    extra: dict[str, Any] = {"position": offset + exc.pos}
    if line is not None:
        extra["line"] = line
    else:
        extra.update(line=exc.lineno, column=exc.colno)
    where = f"line {line}" if line is not None else f"position {offset + exc.pos}"
    return PushRefused(400, "malformed_json", f"malformed JSON at {where}: {exc.msg}", extra)


def _not_an_object(index: int, value: Any) -> PushRefused:
    kind = "array" if isinstance(value, list) else "null" if value is None else type(value).__name__
    return PushRefused(400, "not_an_object", f"element {index} is not a JSON object (it is {kind})", {"index": index})


def parse_json(body: bytes) -> list[dict[str, Any]]:
    """Records of a JSON body: one object, or an array of objects."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _malformed(exc) from None
    _refuse_wide_integers(body)
    if isinstance(parsed, dict):
        return [parsed]
    if not isinstance(parsed, list):
        raise PushRefused(
            400,
            "not_an_object",
            "the body must be a JSON object or an array of JSON objects",
            {"index": 0},
        )
    for index, record in enumerate(parsed):
        if not isinstance(record, dict):
            raise _not_an_object(index, record)
    return parsed


def parse_ndjson(body: bytes) -> list[dict[str, Any]]:
    """Records of an NDJSON body: one object per line; blank lines are skipped, the index counts records."""
    records: list[dict[str, Any]] = []
    offset = 0
    wide_digits = _LONG_DIGITS.search(body) is not None
    for number, line in enumerate(body.split(b"\n"), start=1):
        stripped = line.strip()
        if stripped:
            try:
                record = orjson.loads(stripped)
            except orjson.JSONDecodeError as exc:
                raise _malformed(exc, offset + (len(line) - len(line.lstrip())), number) from None
            if not isinstance(record, dict):
                raise _not_an_object(len(records), record)
            if wide_digits:
                _refuse_wide_integers(stripped, number)
            records.append(record)
        offset += len(line) + 1
    return records


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _refuse_nul(records: list[dict[str, Any]]) -> None:
    """Postgres text and jsonb cannot hold U+0000; refuse it here rather than accept what can never be stored."""
    for index, record in enumerate(records):
        if _holds_nul(record):
            raise PushRefused(
                400,
                "nul_character",
                f"element {index} holds the NUL character (\\u0000), which text columns cannot store",
                {"index": index},
            )


def parse_records(body: bytes, kind: str) -> list[dict[str, Any]]:
    records = parse_ndjson(body) if kind == "ndjson" else parse_json(body)
    # The escape is the only way JSON can carry U+0000, so the scan runs only when the bytes show one.
    if b"\\u0000" in body:
        _refuse_nul(records)
    return records
