"""`/api/collectors…` on the ingest service: what `headrace collector` does, over HTTP, behind the admin token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from headrace.catalog import Catalog, InvalidStorageName, StorageNotFound
from headrace.settings import Settings
from headrace.web import json_error
from headrace.web.service import json_response
from ingest.admin import ErrorAnswers, guarded
from ingest.collectors.batches import BatchFailed
from ingest.collectors.definitions import CollectorDefinition, CollectorExists, CollectorNotFound, CollectorStore
from ingest.collectors.files import FileSourceError
from ingest.collectors.runner import CollectorBusy, CollectorRunner, create_collector
from ingest.collectors.sources import SourceError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HasCollectorNeeds(Protocol):
    settings: Settings
    catalog: Catalog | None
    producer: AIOKafkaProducer | None


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'definition'}: {error['msg']}" for error in exc.errors()
    )


COLLECTOR_ERRORS: ErrorAnswers = [
    ((CollectorNotFound, StorageNotFound), 404),
    ((CollectorExists, CollectorBusy), 409),
    (ValidationError, lambda exc: json_error(422, validation_message(exc))),  # type: ignore[arg-type]
    ((InvalidStorageName, ValueError), 422),
    ((SourceError, FileSourceError), lambda exc: json_error(502, f"the source failed: {exc}")),
    (BatchFailed, lambda exc: json_error(503, f"{exc}; the batch stays pending and is sent again on the next run")),
]


class CollectorRoutes:
    def __init__(self, service: HasCollectorNeeds) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        guard = self._guarded
        router.add_get("/api/collectors", guard(self.list))
        router.add_post("/api/collectors", guard(self.create))
        router.add_get("/api/collectors/{name}", guard(self.show))
        router.add_delete("/api/collectors/{name}", guard(self.delete))
        router.add_post("/api/collectors/{name}/run", guard(self.run))
        router.add_get("/api/collectors/{name}/batches", guard(self.batches))
        router.add_post("/api/collectors/{name}/batches/{batch}/replay", guard(self.replay))

    @property
    def catalog(self) -> Catalog:
        assert self.service.catalog is not None
        return self.service.catalog

    @property
    def store(self) -> CollectorStore:
        return CollectorStore(self.catalog.pool)

    def runner(self) -> CollectorRunner:
        assert self.service.producer is not None
        return CollectorRunner(self.service.settings, self.catalog, self.service.producer)

    def _guarded(self, handler: Handler) -> Handler:
        return guarded(self.service.settings, handler, COLLECTOR_ERRORS)

    async def list(self, request: web.Request) -> web.Response:
        return json_response([c.to_json() for c in await self.store.list()])

    async def create(self, request: web.Request) -> web.Response:
        try:
            body: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return json_error(400, f"malformed JSON: {exc}")
        definition = CollectorDefinition.model_validate(body)
        collector = await create_collector(self.service.settings, self.catalog, definition)
        return json_response(collector.to_json(), status=201)

    async def show(self, request: web.Request) -> web.Response:
        return json_response((await self.store.get(request.match_info["name"])).to_json())

    async def delete(self, request: web.Request) -> web.Response:
        await self.store.delete(request.match_info["name"])
        return json_response({"deleted": request.match_info["name"]})

    async def run(self, request: web.Request) -> web.Response:
        return json_response(await self.runner().run(request.match_info["name"]))

    async def batches(self, request: web.Request) -> web.Response:
        collector = await self.store.get(request.match_info["name"])
        return json_response(await self.store.batches(collector))

    async def replay(self, request: web.Request) -> web.Response:
        result = await self.runner().replay(request.match_info["name"], request.match_info["batch"])
        return json_response(result)
