"""The ingest HTTP service: authenticates pushes, parses them, and answers once Kafka holds every event."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from dataclasses import dataclass

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from headrace.catalog import Catalog, Storage, StorageNotFound
from headrace.catalog.storages import hash_token
from headrace.events import event_headers
from headrace.kafka import Topics, producer
from headrace.web import HttpService, json_error
from headrace.web.service import json_response
from ingest.admin import StorageRoutes

log = logging.getLogger(__name__)

# Hashed when the storage is unknown, so an unknown id costs the same as a wrong token.
_DUMMY_HASH = hash_token("no such token")


@dataclass(frozen=True)
class _Known:
    storage: Storage | None
    token_hashes: tuple[bytes, ...]
    expires: float


class IngestService(HttpService):
    name = "ingest"
    CACHE_SECONDS = 5.0

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.topics = Topics(settings.topic_prefix)
        self.producer: AIOKafkaProducer | None = None
        self.catalog: Catalog | None = None
        self._known: dict[uuid.UUID, _Known] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/data_source/{storage_id}/push/{token}", self.push)
        StorageRoutes(self).register(router)

    def kafka_client(self) -> AIOKafkaClient | None:
        return self.producer.client if self.producer is not None else None

    async def start(self) -> None:
        await super().start()
        assert self.pool is not None
        self.catalog = Catalog(self.pool, max_columns=self.settings.max_columns)
        self.producer = producer(self.settings)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.flush()
            await self.producer.stop()
        await super().stop()

    async def _storage(self, storage_id: uuid.UUID) -> _Known:
        known = self._known.get(storage_id)
        if known is None or known.expires < time.monotonic():
            assert self.catalog is not None
            try:
                storage = await self.catalog.get_by_id(storage_id)
                hashes = tuple(await self.catalog.token_hashes(storage_id))
            except StorageNotFound:
                storage, hashes = None, ()
            known = _Known(storage, hashes, time.monotonic() + self.CACHE_SECONDS)
            self._known[storage_id] = known
        return known

    async def authenticate(self, request: web.Request) -> Storage | None:
        """The storage the URL names, or None when the storage or the token is wrong (indistinguishably)."""
        try:
            storage_id = uuid.UUID(request.match_info["storage_id"])
        except ValueError:
            storage_id = None
        known = await self._storage(storage_id) if storage_id else _Known(None, (), 0)
        presented = hash_token(request.match_info["token"])
        matched = False
        for expected in known.token_hashes or (_DUMMY_HASH,):
            matched |= hmac.compare_digest(presented, expected)
        return known.storage if matched and known.storage is not None else None

    async def push(self, request: web.Request) -> web.Response:
        storage = await self.authenticate(request)
        if storage is None:
            return json_error(404, "no storage with this id and token")
        body = await request.read()
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return json_error(400, f"malformed JSON: {exc}", position=exc.pos)
        records = parsed if isinstance(parsed, list) else [parsed]
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                return json_error(400, f"element {index} is not a JSON object", index=index)
        received_ms = int(time.time() * 1000)
        topic = self.topics.ingest(storage.name)
        assert self.producer is not None
        try:
            futures = [
                await self.producer.send(
                    topic,
                    value=orjson.dumps(record),
                    headers=event_headers(str(uuid.uuid4()), received_ms),
                    timestamp_ms=received_ms,
                )
                for record in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            log.warning("produce failed: %s", exc)
            return json_error(503, "Kafka is unreachable; retry later", headers={"Retry-After": "5"})
        return json_response({"accepted": len(records)})
