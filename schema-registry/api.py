"""What every registry route shares: Confluent's content type and error bodies, request parsing, connections."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from headrace.postgres import Connection
from headrace.registry.errors import RegistryError
from headrace.web import HttpService

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# Everything Confluent clients send; a body in any of these is read as JSON (the service guard refuses others).
REGISTRY_BODY_TYPES = frozenset(
    (CONTENT_TYPE, "application/vnd.schemaregistry+json", "application/json", "application/octet-stream")
)
ACCEPTED_CONTENT_TYPES = REGISTRY_BODY_TYPES | {""}


class BadRequest(RegistryError):
    status, error_code = 400, 400


class UnsupportedMediaType(RegistryError):
    status, error_code = 415, 415


def registry_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=CONTENT_TYPE)


@web.middleware
async def registry_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure answers as Confluent does: {"error_code", "message"} with the matching status."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return registry_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return registry_response({"error_code": exc.status, "message": f"HTTP {exc.status} {exc.reason}"}, exc.status)
    except Exception:
        log.exception("registry request failed", extra={"path": request.path})
        return registry_response({"error_code": 50001, "message": "Error in the backend data store"}, status=500)


async def json_body(request: web.Request) -> Any:
    if request.content_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaType(f"unsupported content type {request.content_type}; send {CONTENT_TYPE}")
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from exc


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (clients send true, True, false, False)."""
    return request.query.get(name, "false").strip().lower() == "true"


class Router:
    """A resource's routes, backed by the service's Postgres pool."""

    def __init__(self, service: HttpService) -> None:
        self.service = service

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        pool = self.service.pool
        if pool is None:
            raise RegistryError("the registry is not connected to Postgres yet")
        async with pool.acquire() as conn, conn.transaction():
            yield conn

    def add_to(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError
