"""The exporter's HTTP API: export definitions (create, list, show, delete), runs and regenerations as jobs, history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from exporter.definitions import ExportDefinition, ExportExists, ExportNotFound
from exporter.partitioning import parse_period
from exporter.runs import RunFailed, RunInProgress
from headrace.catalog import StorageNotFound
from headrace.progress import Progress
from headrace.web.errors import INVALID_INPUT, ErrorAnswers, Handler, InvalidDefinition, guarded, read_json
from headrace.web.jobs import Jobs
from headrace.web.service import json_response

if TYPE_CHECKING:
    from exporter.service import ExporterService

EXPORT_ERRORS: ErrorAnswers = [
    ((ExportNotFound, StorageNotFound), 404),
    ((ExportExists, RunInProgress), 409),
    (RunFailed, 502),
    *INVALID_INPUT,
]
# Runs listed when no `?limit=` says otherwise, and at most.
RUNS_SHOWN, MAX_RUNS_SHOWN = 20, 1000


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    start: str = Field(alias="from", description="ISO-8601 date or date-time, UTC, included")
    end: str = Field(alias="to", description="ISO-8601 date (that whole day included) or date-time (excluded)")
    folder: str


class ExportApi:
    """Routes under /api/exports, on the exporter service."""

    def __init__(self, service: ExporterService) -> None:
        self.service = service

    def add_routes(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/api/exports", self.list),
            ("POST", "/api/exports", self.create),
            ("GET", "/api/exports/{name}", self.show),
            ("PUT", "/api/exports/{name}", self.replace),
            ("DELETE", "/api/exports/{name}", self.delete),
            ("POST", "/api/exports/{name}/runs", self.run),
            ("GET", "/api/exports/{name}/runs", self.runs),
            ("POST", "/api/exports/{name}/regenerate", self.regenerate),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, guarded(handler, EXPORT_ERRORS))

    @property
    def jobs(self) -> Jobs:
        assert self.service.jobs is not None
        return self.service.jobs

    async def list(self, request: web.Request) -> web.Response:
        """Every export with its latest run (`last_run`, null before the first)."""
        store = self.service.store
        last = await store.last_runs()
        return json_response([e.to_json() | {"last_run": last.get(str(e.id))} for e in await store.list()])

    async def create(self, request: web.Request) -> web.Response:
        definition = ExportDefinition.model_validate(await read_json(request))
        export = await self.service.store.create(definition)
        return json_response(export.to_json(), status=201)

    async def show(self, request: web.Request) -> web.Response:
        export = await self.service.store.get(request.match_info["name"])
        return json_response(export.to_json())

    async def replace(self, request: web.Request) -> web.Response:
        """The whole new definition (what `show` gives, edited: masked credentials are kept as stored)."""
        given = await read_json(request)
        if not isinstance(given, dict):
            raise InvalidDefinition.at([], "the body is the export's definition, a JSON object")
        export = await self.service.store.replace(request.match_info["name"], given)
        return json_response(export.to_json())

    async def delete(self, request: web.Request) -> web.Response:
        await self.service.store.delete(request.match_info["name"])
        return json_response({"deleted": request.match_info["name"]})

    async def run(self, request: web.Request) -> web.Response:
        """A live run as a job (202; `?wait=true`: the run once reported, 409 while one is going, 502 if it fails)."""
        export = await self.service.store.get(request.match_info["name"])
        runner = self.service.runner

        async def work(progress: Progress) -> dict[str, Any]:
            return (await runner.run(export, trigger="api", progress=progress)).to_json()

        return await self.jobs.respond(request, "export-run", export.name, work, EXPORT_ERRORS, "rows")

    async def runs(self, request: web.Request) -> web.Response:
        export = await self.service.store.get(request.match_info["name"])
        given = request.query.get("limit", str(RUNS_SHOWN))
        if not given.isdigit() or int(given) > MAX_RUNS_SHOWN:
            raise InvalidDefinition.at(["limit"], f"an integer from 0 to {MAX_RUNS_SHOWN}")
        return json_response(await self.service.store.runs(export, int(given)))

    async def regenerate(self, request: web.Request) -> web.Response:
        """A regeneration as a job (202; `?wait=true`: the run once reported)."""
        export = await self.service.store.get(request.match_info["name"])
        body = RegenerateRequest.model_validate(await read_json(request))
        start, end = parse_period(body.start, body.end)
        runner = self.service.runner

        async def work(progress: Progress) -> dict[str, Any]:
            run = await runner.regenerate(export, start, end, body.folder, trigger="api", progress=progress)
            return run.to_json()

        return await self.jobs.respond(request, "export-regenerate", export.name, work, EXPORT_ERRORS, "rows")
