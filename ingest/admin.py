"""The storage management API on the ingest service: create, list, show, lock, tokens, rejected rows, history."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from aiohttp import web

from headrace.catalog import Catalog, InvalidStorageName, StorageExists, StorageNotFound
from headrace.catalog.provision import create_storage
from headrace.catalog.rejected import list_rejected, replay_rejected
from headrace.settings import Settings
from headrace.web import json_error
from headrace.web.service import json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HasCatalog(Protocol):
    settings: Settings
    catalog: Catalog | None

    def forget(self, storage_id: uuid.UUID) -> None: ...


def admin_refusal(settings: Settings, request: web.Request) -> web.Response | None:
    """The 401 answer when HEADRACE_ADMIN_TOKEN is set and the request lacks it; None when it may go on."""
    expected = settings.admin_token
    if expected:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(presented, expected.encode()):
            return json_error(401, "a valid admin token is required (Authorization: Bearer …)")
    return None


ExceptionKinds = type[Exception] | tuple[type[Exception], ...]
# How a management route answers an exception: a status with the exception's text, or a function of it.
ErrorAnswers = list[tuple[ExceptionKinds, int | Callable[[Exception], web.Response]]]

STORAGE_ERRORS: ErrorAnswers = [
    (StorageNotFound, 404),
    (StorageExists, 409),
    ((InvalidStorageName, ValueError), 422),
]


def guarded(settings: Settings, handler: Handler, errors: ErrorAnswers) -> Handler:
    """A management route behind the admin token, answering the user's errors as JSON (first match wins)."""

    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        refusal = admin_refusal(settings, request)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except Exception as exc:
            for kinds, answer in errors:
                if isinstance(exc, kinds):
                    return answer(exc) if callable(answer) else json_error(answer, str(exc))
            raise

    return guarded_handler


class StorageRoutes:
    """`/api/storages…`: what `headrace storage` does, over HTTP. Guarded by HEADRACE_ADMIN_TOKEN when it is set."""

    def __init__(self, service: HasCatalog) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        guard = self._guarded
        router.add_get("/api/storages", guard(self.list))
        router.add_post("/api/storages", guard(self.create))
        router.add_get("/api/storages/{name}", guard(self.show))
        router.add_post("/api/storages/{name}/lock", guard(self.lock))
        router.add_post("/api/storages/{name}/unlock", guard(self.unlock))
        router.add_post("/api/storages/{name}/token", guard(self.rotate_token))
        router.add_get("/api/storages/{name}/rejected", guard(self.rejected))
        router.add_post("/api/storages/{name}/rejected/replay", guard(self.replay))
        router.add_get("/api/storages/{name}/history", guard(self.history))

    @property
    def catalog(self) -> Catalog:
        assert self.service.catalog is not None
        return self.service.catalog

    def _guarded(self, handler: Handler) -> Handler:
        return guarded(self.service.settings, handler, STORAGE_ERRORS)

    async def list(self, request: web.Request) -> web.Response:
        return json_response([s.to_json() for s in await self.catalog.list()])

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return json_error(400, f"malformed JSON: {exc}")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return json_error(422, 'expected {"name": ..., "primary_key": [...], "load_mode": ...}')
        created = await create_storage(
            self.service.settings,
            self.catalog,
            body["name"],
            list(body.get("primary_key") or []),
            body.get("load_mode", "append"),
        )
        return json_response(created, status=201)

    async def show(self, request: web.Request) -> web.Response:
        return json_response(await self.catalog.describe(request.match_info["name"]))

    async def lock(self, request: web.Request) -> web.Response:
        return await self._set_locked(request, True)

    async def unlock(self, request: web.Request) -> web.Response:
        return await self._set_locked(request, False)

    async def _set_locked(self, request: web.Request, locked: bool) -> web.Response:
        storage = await self.catalog.set_locked(request.match_info["name"], locked)
        # This process's push cache drops the storage now; other ingest instances follow within their cache time.
        self.service.forget(storage.id)
        return json_response(storage.to_json())

    async def rotate_token(self, request: web.Request) -> web.Response:
        storage, token = await self.catalog.rotate_token(request.match_info["name"])
        self.service.forget(storage.id)
        return json_response(
            storage.to_json() | {"push_url": storage.push_url(self.service.settings.push_base_url, token)}
        )

    async def rejected(self, request: web.Request) -> web.Response:
        storage = await self.catalog.get(request.match_info["name"])
        include = request.query.get("all", "").lower() in ("1", "true", "yes")
        return json_response(await list_rejected(self.catalog, storage, include))

    async def replay(self, request: web.Request) -> web.Response:
        storage = await self.catalog.get(request.match_info["name"])
        return json_response({"replayed": await replay_rejected(self.service.settings, self.catalog, storage)})

    async def history(self, request: web.Request) -> web.Response:
        return json_response(await self.catalog.history(request.match_info["name"]))
