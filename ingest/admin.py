"""The storage management API on the ingest service: create, list, show, delete, lock, tokens, rejected rows,
history, batches, rows and streaming ETL, each one implementation the CLI and the client call over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from headrace.catalog import Catalog, InvalidStorageName, StorageExists, StorageNotFound
from headrace.catalog.deletion import StorageInUse, delete_storage
from headrace.catalog.provision import create_storage
from headrace.catalog.rejected import list_rejected, replay_rejected
from headrace.etl import EtlConfig, FormulaError, parse
from headrace.etl.store import get_etl, set_etl
from headrace.progress import Progress
from headrace.query import MAX_QUERY_ROWS, QueryError, fetch_rows
from headrace.settings import Settings
from headrace.web.errors import INVALID_INPUT, ErrorAnswers, Handler, InvalidDefinition, guarded, read_json
from headrace.web.jobs import Jobs
from headrace.web.service import json_response


class HasCatalog(Protocol):
    settings: Settings
    catalog: Catalog | None
    jobs: Jobs | None

    def forget(self, storage_id: uuid.UUID, topic: str | None = None) -> None: ...


STORAGE_ERRORS: ErrorAnswers = [
    (StorageNotFound, 404),
    ((StorageExists, StorageInUse), 409),
    ((InvalidStorageName, QueryError), 422),
    *INVALID_INPUT,
]


class StorageRequest(BaseModel):
    name: str
    primary_key: list[str] = Field(default_factory=list)
    load_mode: Literal["append", "merge", "replace"] = "append"


class EtlRequest(BaseModel):
    """A storage's streaming ETL as `PUT /api/storages/{name}/etl` takes it (and GET shows it)."""

    model_config = ConfigDict(extra="forbid")
    select: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    filter: str | None = None
    compute: dict[str, str] = Field(default_factory=dict)

    def config(self) -> EtlConfig:
        """Every formula parsed, each error at its field's path (`filter`, `compute.<name>`)."""
        errors: list[tuple[Sequence[str | int], str]] = []
        formulas = [(["filter"], self.filter)] if self.filter else []
        for name, formula in self.compute.items():
            formulas.append((["compute", name], formula))
        for path, formula in formulas:
            try:
                parse(formula)
            except FormulaError as exc:
                errors.append((path, str(exc)))
        if errors:
            raise InvalidDefinition(errors)
        try:
            return EtlConfig(select=self.select, rename=self.rename, filter=self.filter, compute=self.compute)
        except FormulaError as exc:
            raise InvalidDefinition.at([], str(exc)) from None


class StorageRoutes:
    """`/api/storages…`: what `headrace storage` does, over HTTP, behind the admin token (headrace.web.auth)."""

    def __init__(self, service: HasCatalog) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/api/storages", self.list),
            ("POST", "/api/storages", self.create),
            ("GET", "/api/storages/{name}", self.show),
            ("DELETE", "/api/storages/{name}", self.delete),
            ("POST", "/api/storages/{name}/lock", self.lock),
            ("POST", "/api/storages/{name}/unlock", self.unlock),
            ("POST", "/api/storages/{name}/token", self.rotate_token),
            ("GET", "/api/storages/{name}/rejected", self.rejected),
            ("POST", "/api/storages/{name}/rejected/replay", self.replay),
            ("GET", "/api/storages/{name}/history", self.history),
            ("GET", "/api/storages/{name}/batches", self.batches),
            ("GET", "/api/storages/{name}/rows", self.rows),
            ("GET", "/api/storages/{name}/etl", self.etl),
            ("PUT", "/api/storages/{name}/etl", self.set_etl),
            ("DELETE", "/api/storages/{name}/etl", self.clear_etl),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, guarded(handler, STORAGE_ERRORS))

    @property
    def catalog(self) -> Catalog:
        assert self.service.catalog is not None
        return self.service.catalog

    @property
    def settings(self) -> Settings:
        return self.service.settings

    async def list(self, request: web.Request) -> web.Response:
        """Every storage; `?stats=true` adds each one's rows (estimated) and last write, for the console's list."""
        storages = await self.catalog.list()
        if request.query.get("stats", "").lower() not in ("1", "true", "yes"):
            return json_response([s.to_json() for s in storages])
        stats = await self.catalog.stats(storages)
        return json_response([s.to_json() | stats.get(s.id, {}) for s in storages])

    async def create(self, request: web.Request) -> web.Response:
        body = StorageRequest.model_validate(await read_json(request))
        created = await create_storage(self.settings, self.catalog, body.name, body.primary_key, body.load_mode)
        return json_response(created, status=201)

    async def show(self, request: web.Request) -> web.Response:
        return json_response(await self.catalog.describe(request.match_info["name"]))

    async def delete(self, request: web.Request) -> web.Response:
        """The storage and everything it had (headrace.catalog.deletion); 409 while a collector or export names it."""
        deleted = await delete_storage(self.settings, self.catalog, request.match_info["name"])
        # This process forgets it now; other ingest instances within their cache time (their pushes dead-letter).
        self.service.forget(uuid.UUID(deleted["id"]), deleted["topic"]["name"])
        return json_response(deleted)

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
        return json_response(storage.to_json() | {"push_url": storage.push_url(self.settings.push_base_url, token)})

    async def rejected(self, request: web.Request) -> web.Response:
        storage = await self.catalog.get(request.match_info["name"])
        include = request.query.get("all", "").lower() in ("1", "true", "yes")
        return json_response(await list_rejected(self.catalog, storage, include))

    async def replay(self, request: web.Request) -> web.Response:
        """A job (202; `?wait=true`: answered `{"replayed": N}` once done)."""
        storage = await self.catalog.get(request.match_info["name"])

        async def work(progress: Progress) -> dict[str, Any]:
            return {"replayed": await replay_rejected(self.settings, self.catalog, storage, progress)}

        assert self.service.jobs is not None
        return await self.service.jobs.respond(request, "replay-rejected", storage.name, work, STORAGE_ERRORS, "rows")

    async def history(self, request: web.Request) -> web.Response:
        return json_response(await self.catalog.history(request.match_info["name"]))

    async def batches(self, request: web.Request) -> web.Response:
        return json_response(await self.catalog.batches(request.match_info["name"]))

    async def rows(self, request: web.Request) -> web.Response:
        """The rows in insertion order with their system columns (`storage query`); `?limit=`, at most 100,000."""
        storage = await self.catalog.get(request.match_info["name"])
        given = request.query.get("limit")
        if given is not None and (not given.isdigit() or int(given) > MAX_QUERY_ROWS):
            raise InvalidDefinition.at(["limit"], f"an integer from 0 to {MAX_QUERY_ROWS}")
        limit = int(given) if given is not None else MAX_QUERY_ROWS + 1
        rows = await fetch_rows(self.catalog, storage, limit)
        if len(rows) > MAX_QUERY_ROWS:
            raise QueryError(f"the storage holds more than {MAX_QUERY_ROWS} rows: give a limit")
        return json_response(rows)

    async def etl(self, request: web.Request) -> web.Response:
        return json_response((await get_etl(self.catalog.pool, request.match_info["name"])).to_json())

    async def set_etl(self, request: web.Request) -> web.Response:
        """The ETL becomes exactly the given steps; transform applies them to the events it writes from now on."""
        config = EtlRequest.model_validate(await read_json(request)).config()
        return json_response((await set_etl(self.catalog.pool, request.match_info["name"], config)).to_json())

    async def clear_etl(self, request: web.Request) -> web.Response:
        return json_response((await set_etl(self.catalog.pool, request.match_info["name"], EtlConfig())).to_json())
