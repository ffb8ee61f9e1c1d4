"""Push bodies: content type and encoding checks, bounded reading and gunzip, and parsing into event records."""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from headrace.web import json_error
from ingest.budget import Reservation, push_cost
from ingest.counting import count, estimate

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
CSV_TYPES = frozenset({"text/csv"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})
READ_CHUNK = 64 * 1024
# NDJSON lines are split on LF alone (U+2028, U+2029 and U+0085 are ordinary characters inside JSON strings);
# a line holding only JSON's whitespace is blank.
_NOT_BLANK = re.compile(rb"[^ \t\r\n]")
# Postgres bigint bounds: a wider integer could not be stored without loss.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# orjson turns integers past 64 bits into floats silently; a run of 19+ digits is the only way to write one. A
# number follows `[`, `,` or `:`, so digits inside a string (a long id sent as text) rarely cost a second parse.
_LONG_DIGITS = re.compile(rb"(?:^|[\[,:])\s*-?\d{19,}")


@dataclass
class PushRefused(Exception):
    """A push answered with a 4xx/5xx status, a JSON error body and the metrics reason it counts under."""

    status: int
    reason: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None
    events: int = 1  # how many events the refusal counts as (1 when the body was never split into events)
    close: bool = False  # close the connection: the rest of the body is not worth waiting for

    def __str__(self) -> str:
        return self.message

    def answer(self) -> web.Response:
        response = json_error(self.status, self.message, headers=self.headers, **self.extra)
        if self.close:
            response.force_close()
        return response


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

    Never inflates more than limit + 1 bytes, nor more than `piece` bytes at a time, so a gzip bomb costs no more
    memory than an honest large body. Concatenated gzip members (which `cat a.gz b.gz` makes) are one stream, as
    gunzip reads them.
    """

    def __init__(self, limit: int, piece: int = READ_CHUNK) -> None:
        self.limit = limit
        self.piece = piece
        self.produced = 0
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The inflated output of `data`, in pieces of at most `piece` bytes."""
        while True:
            room = min(self.piece, self.limit - self.produced + 1)
            try:
                out = self._inflater.decompress(data, room)
            except zlib.error as exc:
                raise PushRefused(400, "bad_gzip", f"the gzip body is corrupt: {exc}") from None
            self.produced += len(out)
            if self.produced > self.limit:
                raise _too_large(self.limit, "after gunzip")
            if out:
                yield out
            if self._inflater.eof:
                data = self._inflater.unused_data
                if not data:
                    return
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                data = self._inflater.unconsumed_tail
                # A full piece may leave output inside zlib with no input left: ask again until it comes short.
                if not data and len(out) < room:
                    return

    def finish(self) -> None:
        if not self._inflater.eof:
            raise PushRefused(400, "bad_gzip", "the gzip body is truncated")


def _read_timeout(seconds: float) -> PushRefused:
    return PushRefused(
        408,
        "read_timeout",
        f"the body did not arrive within {seconds:g} s; nothing of it is kept",
        {"timeout_seconds": seconds},
        close=True,
    )


async def body_pieces(
    request: web.Request, limit: int, timeout: float, per_read: bool = False, chunk_bytes: int = READ_CHUNK
) -> AsyncIterator[tuple[bytes, int]]:
    """The decoded body in pieces of at most `chunk_bytes`, each with the bytes it took on the wire.

    Bounded three ways: `limit` bytes as sent and again after gunzip (413), and time: the whole body within
    `timeout` seconds, or with `per_read` each read within it (a streamed batch may take long, never stall) (408).
    """
    inflater = _inflater(request, limit, chunk_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, "as sent")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wire = 0
    while chunk := await _read_chunk(request, chunk_bytes, loop.time() + timeout if per_read else deadline, timeout):
        wire += len(chunk)
        if wire > limit:
            raise _too_large(limit, "as sent")
        for piece in _decoded(chunk, inflater):
            yield piece
    if inflater is not None:
        inflater.finish()


def _inflater(request: web.Request, limit: int, chunk_bytes: int) -> GzipInflater | None:
    """What inflates the body (None: it is sent as is), from its Content-Encoding; 415 for any other."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in GZIP_ENCODINGS:
        return GzipInflater(limit, chunk_bytes)
    if encoding in IDENTITY_ENCODINGS:
        return None
    raise PushRefused(415, "unsupported_media_type", f"unsupported Content-Encoding {encoding!r}: use gzip or none")


async def _read_chunk(request: web.Request, chunk_bytes: int, deadline: float, timeout: float) -> bytes:
    """The body's next bytes as sent (empty at its end), read by `deadline` (408 past it, naming `timeout`)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await request.content.read(chunk_bytes)
    except TimeoutError:
        raise _read_timeout(timeout) from None
    except (ConnectionError, HttpProcessingError) as exc:
        # The client went away (or broke the framing) mid-body: nobody will read the answer, but the metrics do.
        raise PushRefused(400, "incomplete_body", f"the body ended early: {exc}", close=True) from None


def _decoded(chunk: bytes, inflater: GzipInflater | None) -> Iterator[tuple[bytes, int]]:
    """A chunk as sent, decoded: its pieces, the first one carrying the chunk's bytes on the wire."""
    if inflater is None:
        yield chunk, len(chunk)
        return
    sent = len(chunk)
    for piece in inflater.feed(chunk):
        yield piece, sent
        sent = 0
    if sent:  # a chunk that inflated to nothing yet still took its bytes on the wire
        yield b"", sent


async def read_body(request: web.Request, limit: int, reservation: Reservation, timeout: float) -> tuple[bytes, int]:
    """The whole decoded body and its size on the wire, its bytes reserved as they arrive (both copies held)."""
    arrived = arrived_body(request, limit)
    if arrived is not None:
        reserve(reservation, 2 * len(arrived), "the body")
        return arrived, len(arrived)
    pieces: list[bytes] = []
    wire = 0
    async for piece, sent in body_pieces(request, limit, timeout):
        reserve(reservation, sent + len(piece), "the body")
        wire += sent
        pieces.append(piece)
    return b"".join(pieces), wire


def arrived_body(request: web.Request, limit: int) -> bytes | None:
    """A body sent as is that has arrived whole with its headers (a small push): taken at once, with no read to wait
    for and so no deadline to keep; None leaves the body to body_pieces, with every bound."""
    length = request.content_length
    content = request.content
    if length is None or length > limit or not content.is_eof() or "Content-Encoding" in request.headers:
        return None
    # At its end, the stream holds exactly the body its Content-Length framed: aiohttp's parser saw to that.
    return content.read_nowait(-1)


def admit(body: bytes, kind: str, reservation: Reservation, max_events: int) -> None:
    """Reserve what parsing the body and producing its events will hold, or refuse it (413) before parsing it.

    The byte counts of `estimate` decide almost every body in microseconds; only a body they cannot clear (past
    the cap or the room left in the budget, perhaps only because its strings hold commas) is counted exactly.
    """
    shape = estimate(body, kind)
    if shape.events > max_events or push_cost(len(body), shape) > reservation.budget.room:
        shape = count(body, kind, stop_after=max_events)
    if shape.events > max_events:
        raise PushRefused(
            413,
            "too_many_events",
            f"the body holds more than {max_events} events (HEADRACE_INGEST_MAX_EVENTS); send them in several pushes",
            {"max_events": max_events},
        )
    reserve(reservation, push_cost(len(body), shape), f"the body's {shape.events} events and {shape.values} values")


def reserve(reservation: Reservation, cost: int, what: str = "this piece of the body") -> None:
    """Take `cost` bytes: 413 when the request could never hold that much, 429 (Overloaded) when others hold it."""
    if not reservation.fits(cost):
        capacity = reservation.budget.capacity
        raise PushRefused(
            413,
            "too_large",
            f"{what} would take about {cost / 2**20:.1f} MiB in memory, more than ingest lets all requests hold at"
            f" once ({capacity} bytes, HEADRACE_INGEST_IN_FLIGHT_BYTES); send less at a time",
            {"limit": capacity},
        )
    reservation.take(cost)


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
    """Records of an NDJSON body: one object per line; blank lines are skipped, the index counts records.

    Lines are found by searching for their first non-blank byte, so a run of blank lines costs a C-speed scan,
    never a Python object per line.
    """
    records: list[dict[str, Any]] = []
    wide_digits = _LONG_DIGITS.search(body) is not None
    number, position = 1, 0
    while (found := _NOT_BLANK.search(body, position)) is not None:
        first = found.start()
        number += body.count(b"\n", position, first)
        end = body.find(b"\n", first)
        end = len(body) if end < 0 else end
        line = body[first:end]
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _malformed(exc, first, number) from None
        if not isinstance(record, dict):
            raise _not_an_object(len(records), record)
        if wide_digits:
            _refuse_wide_integers(line, number)
        records.append(record)
        position = end
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
