"""The data API the Python client uses: push records, load a batch (NDJSON, streamed), query a storage."""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from headrace.catalog import Catalog, StorageNotFound
from headrace.catalog.storages import LOAD_MODES
from headrace.kafka import Topics
from headrace.query import QueryError, run_query
from headrace.settings import Settings
from headrace.web import json_error
from headrace.web.service import json_response
from ingest.admin import ErrorAnswers, guarded
from ingest.body import PushRefused, body_format, parse_records, read_body
from ingest.budget import ByteBudget, Overloaded
from ingest.collectors.batches import BatchFailed, BatchWriter
from ingest.collectors.files import FileSourceError, RecordParser
from ingest.push import MAX_EVENT_ID_LENGTH, Event, build_events

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_CHUNK = 256 * 1024


class DataService(Protocol):
    settings: Settings
    catalog: Catalog | None
    producer: AIOKafkaProducer | None
    topics: Topics
    budget: ByteBudget

    async def _produce(self, topic: str, events: list[Event], received_ms: int) -> None: ...

    async def _topic_ready(self, topic: str) -> None: ...


def _refused(refused: PushRefused) -> web.Response:
    return json_error(refused.status, refused.message, headers=refused.headers, **refused.extra)


RETRY_SOON = {"Retry-After": "1"}
DATA_ERRORS: ErrorAnswers = [
    (StorageNotFound, 404),
    (PushRefused, _refused),  # type: ignore[list-item]
    (Overloaded, lambda exc: json_error(429, f"ingest is overloaded, retry later: {exc}", headers=RETRY_SOON)),
    ((QueryError, FileSourceError, ValueError), 422),
    (
        BatchFailed,
        lambda exc: json_error(503, f"{exc}; send the batch again with the same batch_id", headers=RETRY_SOON),
    ),
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
        return guarded(self.service.settings, handler, DATA_ERRORS)

    async def records(self, request: web.Request) -> web.Response:
        """Like a push to the storage's push URL, but addressed by name with the admin token."""
        received_ms = int(time.time() * 1000)
        storage = await self.catalog.get(request.match_info["name"])
        kind = body_format(request)
        with self.service.budget.reservation() as reservation:
            body, _ = await read_body(request, self.service.settings.ingest_max_body_bytes, reservation)
            records = parse_records(body, kind)
            del body
            events = build_events(records, storage.primary_key, request.headers.get("Idempotency-Key"), received_ms)
            await self.service._produce(self.service.topics.ingest(storage.name), events, received_ms)
        return json_response({"accepted": len(events)})

    async def batch(self, request: web.Request) -> web.Response:
        """An NDJSON (or CSV) body as one batch with the given load mode; answered once Kafka acknowledged all of it.

        The body is streamed, so its size is not bounded by memory. A client retrying a batch passes the same
        `batch_id`, so the retry carries the same batch and event ids.
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
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in ("gzip", "x-gzip") else None
        topic = self.service.topics.ingest(storage.name)
        await self.service._topic_ready(topic)
        assert self.service.producer is not None
        writer = BatchWriter(self.service.producer, topic, batch_id, mode, storage.primary_key)
        file_format = request.query.get("format", "ndjson")
        if file_format not in ("ndjson", "csv"):
            raise ValueError("format is ndjson or csv")
        # CSV cells become JSON values as in file imports (headrace.models.inference.parse_text), on the server.
        parser = RecordParser(file_format, request.query.get("delimiter", ","), name="the body")
        try:
            async for chunk in request.content.iter_chunked(READ_CHUNK):
                if inflater is not None:
                    chunk = inflater.decompress(chunk)
                for record in parser.feed(chunk):
                    await writer.add(record)
            if inflater is not None:
                for record in parser.feed(inflater.flush()):
                    await writer.add(record)
            for record in parser.close():
                await writer.add(record)
            result = await writer.finish()
        except zlib.error as exc:
            writer.abandon()
            raise ValueError(f"corrupt gzip body: {exc}") from exc
        except BaseException:
            writer.abandon()
            raise
        return json_response(result.to_json() | {"load_mode": mode})

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
