"""The data API the Python client uses: push records, load a batch (NDJSON, streamed), query a storage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from headrace.catalog import Catalog, StorageNotFound
from headrace.catalog.storages import LOAD_MODES
from headrace.kafka import Topics
from headrace.query import QueryError, run_query
from headrace.settings import Settings
from headrace.web import json_error
from headrace.web.errors import INVALID_INPUT, ErrorAnswers, Handler, guarded
from headrace.web.service import json_response
from ingest.body import PushRefused, body_pieces, reserve
from ingest.budget import SENT_EVENT_COST, ByteBudget, Overloaded, Reservation, parse_cost
from ingest.collectors.batches import ACK_WINDOW, BatchFailed, BatchWriter
from ingest.collectors.files import FileSourceError, RecordParser, RecordTooLarge
from ingest.counting import estimate
from ingest.push import MAX_EVENT_ID_LENGTH

# A batch body is read, parsed (in a thread) and produced this many bytes at a time; at most 1/64 of the in-flight
# budget, since a piece of `{}` lines costs about 36 times its size once parsed.
BATCH_PIECE = 256 * 1024


class DataService(Protocol):
    settings: Settings
    catalog: Catalog | None
    producer: AIOKafkaProducer | None
    topics: Topics
    budget: ByteBudget

    async def accept(self, request: web.Request, resolve: Callable[[web.Request], Awaitable[Any]]) -> web.Response: ...

    async def known(self, storage_id: uuid.UUID) -> Any: ...

    async def _topic_ready(self, topic: str) -> None: ...


RETRY_SOON = {"Retry-After": "1"}
DATA_ERRORS: ErrorAnswers = [
    (StorageNotFound, 404),
    (PushRefused, lambda exc: exc.answer()),
    (Overloaded, lambda exc: json_error(429, f"ingest is overloaded, retry later: {exc}", headers=RETRY_SOON)),
    (RecordTooLarge, lambda exc: json_error(413, str(exc), limit=exc.limit)),
    ((QueryError, FileSourceError), 422),
    (
        BatchFailed,
        lambda exc: json_error(503, f"{exc}; send the batch again with the same batch_id", headers=RETRY_SOON),
    ),
    *INVALID_INPUT,
]


class DataRoutes:
    """`/api/storages/{name}/records|batches|query`, behind the admin token like the rest of /api/storages."""

    def __init__(self, service: DataService) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/storages/{name}/records", self._guarded(self.records))
        router.add_post("/api/storages/{name}/batches", self._guarded(self.batch))
        router.add_post("/api/storages/{name}/query", self._guarded(self.query))

    @property
    def catalog(self) -> Catalog:
        assert self.service.catalog is not None
        return self.service.catalog

    def _guarded(self, handler: Handler) -> Handler:
        return guarded(handler, DATA_ERRORS)

    async def records(self, request: web.Request) -> web.Response:
        """A push to the storage's push URL, addressed by name with the admin token: the push route's pipeline."""
        return await self.service.accept(request, self._by_name)

    async def _by_name(self, request: web.Request) -> Any:
        try:
            storage = await self.catalog.get(request.match_info["name"])
        except StorageNotFound as exc:
            raise PushRefused(404, "not_found", str(exc)) from None
        return await self.service.known(storage.id)

    async def batch(self, request: web.Request) -> web.Response:
        """An NDJSON (or CSV) body as one batch with the given load mode; answered once Kafka acknowledged all of it.

        The body is streamed: read, inflated, parsed and produced a piece at a time, so a batch of any size (up to
        HEADRACE_INGEST_MAX_BATCH_BYTES) holds one piece, its longest record and its ack window in memory. A client
        retrying a batch passes the same `batch_id`, so the retry carries the same batch and event ids.
        """
        storage = await self.catalog.get(request.match_info["name"])
        mode = request.query.get("mode", storage.load_mode)
        if mode not in LOAD_MODES:
            raise ValueError(f"mode must be one of {', '.join(LOAD_MODES)}")
        if mode == "merge" and not storage.primary_key:
            raise ValueError(f"storage {storage.name!r} has no primary key to merge by")
        batch_id = request.query.get("batch_id") or str(uuid.uuid4())
        if not 0 < len(batch_id) <= MAX_EVENT_ID_LENGTH or not batch_id.isascii() or not batch_id.isprintable():
            raise ValueError(f"batch_id must have 1 to {MAX_EVENT_ID_LENGTH} printable ASCII characters")
        file_format = request.query.get("format", "ndjson")
        if file_format not in ("ndjson", "csv"):
            raise ValueError("format is ndjson or csv")
        topic = self.service.topics.ingest(storage.name)
        await self.service._topic_ready(topic)
        assert self.service.producer is not None
        writer = BatchWriter(self.service.producer, topic, batch_id, mode, storage.primary_key)
        # CSV cells become JSON values as in file imports (headrace.models.inference.parse_text), on the server.
        # No record may be longer than a whole push body.
        parser = RecordParser(
            file_format,
            request.query.get("delimiter", ","),
            name="the body",
            max_record_bytes=self.service.settings.ingest_max_body_bytes,
        )
        try:
            with self.service.budget.reservation() as reservation:
                await self._stream(request, parser, writer, reservation)
                result = await writer.finish()
        except BaseException:
            writer.abandon()
            raise
        return json_response(result.to_json() | {"load_mode": mode})

    async def _stream(
        self, request: web.Request, parser: RecordParser, writer: BatchWriter, reservation: Reservation
    ) -> None:
        """Each piece's bytes and parsed records are reserved while it is handled; standing: what the unacked
        events of the ack window and the parser's unfinished record hold."""
        settings = self.service.settings
        standing = 0
        async for piece, sent in body_pieces(
            request,
            settings.ingest_max_batch_bytes,
            settings.ingest_read_timeout_seconds,
            per_read=True,
            chunk_bytes=max(4096, min(BATCH_PIECE, self.service.budget.capacity // 64)),
        ):
            cost = sent + len(piece) + parse_cost(len(piece), _values(piece, parser))
            reserve(reservation, cost)
            records = await asyncio.to_thread(parser.feed, piece)
            await _add(writer, records)
            del records
            reservation.give_back(cost)
            unacked = min(writer.result.rows, ACK_WINDOW) * SENT_EVENT_COST
            standing = reservation.settle(standing, unacked + parser.pending)
        await _add(writer, parser.close())

    async def query(self, request: web.Request) -> web.Response:
        storage = await self.catalog.get(request.match_info["name"])
        try:
            spec: Any = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            return json_error(400, f"malformed JSON: {exc}")
        if not isinstance(spec, dict):
            return json_error(422, "the query is a JSON object")
        columns, rows = await run_query(self.catalog, storage, spec)
        return json_response(
            {"columns": [{"name": name, "type": column_type.value} for name, column_type in columns], "rows": rows}
        )


async def _add(writer: BatchWriter, records: list[dict[str, Any]]) -> None:
    for record in records:
        try:
            await writer.add(record)
        except BatchFailed as exc:
            if isinstance(exc.__cause__, MessageSizeTooLargeError):
                # No retry gets a record past Kafka's message limit: say so (413), not "send it again" (503).
                raise PushRefused(
                    413,
                    "event_too_large",
                    f"record {writer.result.rows + 1} is larger than a Kafka message holds; the batch is not applied",
                    {"index": writer.result.rows},
                ) from None
            raise


def _values(piece: bytes, parser: RecordParser) -> int:
    """At most how many values parsing the piece makes: JSON's structure, or a CSV row's cells."""
    if parser.format == "ndjson":
        return estimate(piece, "ndjson").values
    return piece.count(parser.delimiter.encode()) + piece.count(b"\n") + 1
