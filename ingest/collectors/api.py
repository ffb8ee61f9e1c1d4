"""`/api/collectors…` on the ingest service: what `headrace collector` does, over HTTP, behind the admin token."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer

from headrace.catalog import Catalog, InvalidStorageName, StorageNotFound
from headrace.progress import Progress
from headrace.settings import Settings
from headrace.web.errors import INVALID_INPUT, ErrorAnswers, Handler, InvalidDefinition, guarded, read_json
from headrace.web.jobs import Jobs
from headrace.web.service import json_error, json_response
from ingest.collectors.batches import BatchFailed
from ingest.collectors.definitions import CollectorDefinition, CollectorExists, CollectorNotFound, CollectorStore
from ingest.collectors.extractor import SourceError
from ingest.collectors.files import FileSourceError
from ingest.collectors.runner import CollectorBusy, CollectorRunner, create_collector


class HasCollectorNeeds(Protocol):
    settings: Settings
    catalog: Catalog | None
    producer: AIOKafkaProducer | None
    jobs: Jobs | None


COLLECTOR_ERRORS: ErrorAnswers = [
    ((CollectorNotFound, StorageNotFound), 404),
    ((CollectorExists, CollectorBusy), 409),
    ((SourceError, FileSourceError), lambda exc: json_error(502, f"the source failed: {exc}")),
    (BatchFailed, lambda exc: json_error(503, f"{exc}; the batch stays pending and is sent again on the next run")),
    (InvalidStorageName, 422),
    *INVALID_INPUT,
]


class CollectorRoutes:
    def __init__(self, service: HasCollectorNeeds) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/api/collectors", self.list),
            ("POST", "/api/collectors", self.create),
            ("GET", "/api/collectors/{name}", self.show),
            ("PUT", "/api/collectors/{name}", self.replace),
            ("DELETE", "/api/collectors/{name}", self.delete),
            ("POST", "/api/collectors/{name}/run", self.run),
            ("GET", "/api/collectors/{name}/batches", self.batches),
            ("POST", "/api/collectors/{name}/batches/{batch}/replay", self.replay),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, guarded(handler, COLLECTOR_ERRORS))

    @property
    def catalog(self) -> Catalog:
        assert self.service.catalog is not None
        return self.service.catalog

    @property
    def store(self) -> CollectorStore:
        return CollectorStore(self.catalog.pool, self.service.settings)

    @property
    def jobs(self) -> Jobs:
        assert self.service.jobs is not None
        return self.service.jobs

    def runner(self) -> CollectorRunner:
        assert self.service.producer is not None
        return CollectorRunner(self.service.settings, self.catalog, self.service.producer)

    async def list(self, request: web.Request) -> web.Response:
        return json_response([c.to_json() for c in await self.store.list()])

    async def create(self, request: web.Request) -> web.Response:
        """The definition `collector show --json` prints, with its secrets; a file source may be given by its URL."""
        definition = CollectorDefinition.model_validate(await read_json(request))
        collector = await create_collector(self.service.settings, self.catalog, definition)
        return json_response(collector.to_json(), status=201)

    async def show(self, request: web.Request) -> web.Response:
        return json_response((await self.store.get(request.match_info["name"])).to_json())

    async def replace(self, request: web.Request) -> web.Response:
        """The whole new definition (what `show` gives, edited: masked credentials are kept as stored)."""
        given = await read_json(request)
        if not isinstance(given, dict):
            raise InvalidDefinition.at([], "the body is the collector's definition, a JSON object")
        return json_response((await self.store.replace(request.match_info["name"], given)).to_json())

    async def delete(self, request: web.Request) -> web.Response:
        await self.store.delete(request.match_info["name"])
        return json_response({"deleted": request.match_info["name"]})

    async def run(self, request: web.Request) -> web.Response:
        """A job (202; `?wait=true`: the batches sent, once sent): a pending batch first, then the next one."""
        name = (await self.store.get(request.match_info["name"])).name
        runner = self.runner()

        async def work(progress: Progress) -> dict[str, Any]:
            return await runner.run(name, progress=progress)

        return await self.jobs.respond(request, "collector-run", name, work, COLLECTOR_ERRORS, "rows")

    async def batches(self, request: web.Request) -> web.Response:
        collector = await self.store.get(request.match_info["name"])
        return json_response(await self.store.batches(collector))

    async def replay(self, request: web.Request) -> web.Response:
        """A job (202; `?wait=true`: the new batch, once sent); an unknown batch is 404 at once."""
        collector = await self.store.get(request.match_info["name"])
        batch_id = (await self.store.batch(collector, request.match_info["batch"]))["batch_id"]
        runner = self.runner()

        async def work(progress: Progress) -> dict[str, Any]:
            return await runner.replay(collector.name, batch_id, progress=progress)

        return await self.jobs.respond(request, "collector-replay", collector.name, work, COLLECTOR_ERRORS, "rows")
