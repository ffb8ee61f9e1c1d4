"""The exporter's HTTP API: export definitions (create, list, show, delete), runs now, regeneration, run history."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from exporter.definitions import ExportDefinition, ExportExists, ExportNotFound
from exporter.partitioning import parse_period
from exporter.runs import RunFailed, RunInProgress
from headrace.catalog import StorageNotFound
from headrace.web.service import json_error, json_response

if TYPE_CHECKING:
    from exporter.service import ExporterService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


class ExportApi:
    """Routes under /api/exports, on the exporter service."""

    def __init__(self, service: ExporterService) -> None:
        self.service = service

    def add_routes(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/api/exports", self.list),
            ("POST", "/api/exports", self.create),
            ("GET", "/api/exports/{name}", self.show),
            ("DELETE", "/api/exports/{name}", self.delete),
            ("POST", "/api/exports/{name}/runs", self.run),
            ("GET", "/api/exports/{name}/runs", self.runs),
            ("POST", "/api/exports/{name}/regenerate", self.regenerate),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, self._guarded(handler))

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = getattr(self.service.settings, "admin_token", None)
            if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
                return json_error(401, "this API needs `Authorization: Bearer <admin token>`")
            try:
                return await handler(request)
            except (ExportNotFound, StorageNotFound) as exc:
                return json_error(404, str(exc))
            except ExportExists as exc:
                return json_error(409, str(exc))
            except RunInProgress as exc:
                return json_error(409, str(exc))
            except ValidationError as exc:
                return json_error(400, validation_message(exc))
            except RunFailed as exc:
                return json_error(502, str(exc))
            except ValueError as exc:
                return json_error(400, str(exc))

        return guarded

    async def _body(self, request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from exc

    async def list(self, request: web.Request) -> web.Response:
        return json_response([e.to_json() for e in await self.service.store.list()])

    async def create(self, request: web.Request) -> web.Response:
        definition = ExportDefinition.model_validate(await self._body(request))
        export = await self.service.store.create(definition)
        return json_response(export.to_json(), status=201)

    async def show(self, request: web.Request) -> web.Response:
        export = await self.service.store.get(request.match_info["name"])
        return json_response(export.to_json())

    async def delete(self, request: web.Request) -> web.Response:
        await self.service.store.delete(request.match_info["name"])
        return json_response({"deleted": request.match_info["name"]})

    async def run(self, request: web.Request) -> web.Response:
        export = await self.service.store.get(request.match_info["name"])
        result = await self.service.runner.run(export, trigger="api")
        return json_response(result.to_json())

    async def runs(self, request: web.Request) -> web.Response:
        export = await self.service.store.get(request.match_info["name"])
        return json_response(await self.service.store.runs(export))

    async def regenerate(self, request: web.Request) -> web.Response:
        export = await self.service.store.get(request.match_info["name"])
        body = await self._body(request)
        if not isinstance(body, dict) or not {"from", "to", "folder"} <= body.keys():
            raise ValueError('the body is {"from": …, "to": …, "folder": …}')
        start, end = parse_period(str(body["from"]), str(body["to"]))
        result = await self.service.runner.regenerate(export, start, end, str(body["folder"]), trigger="api")
        return json_response(result.to_json())
