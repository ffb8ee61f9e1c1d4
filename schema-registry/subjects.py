"""Routes of subjects and their versions: list, register, look up, fetch and delete."""

from __future__ import annotations

from aiohttp import web
from schema_registry.api import Router, flag, json_body, registry_response

from headrace.registry import store
from headrace.registry.schemas import parse_schema_request


class SubjectsRouter(Router):
    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/subjects", self.list_subjects)
        router.add_post("/subjects/{subject}", self.lookup)
        router.add_delete("/subjects/{subject}", self.delete_subject)
        router.add_get("/subjects/{subject}/versions", self.list_versions)
        router.add_post("/subjects/{subject}/versions", self.register)
        router.add_get("/subjects/{subject}/versions/{version}", self.get_version)
        router.add_get("/subjects/{subject}/versions/{version}/schema", self.get_version_schema)
        router.add_delete("/subjects/{subject}/versions/{version}", self.delete_version)

    async def list_subjects(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            found = await store.subjects(conn, flag(request, "deleted"), request.query.get("subjectPrefix", ""))
        return registry_response(found)

    async def lookup(self, request: web.Request) -> web.Response:
        schema, _ = parse_schema_request(await json_body(request))
        async with self.transaction() as conn:
            found = await store.lookup(conn, request.match_info["subject"], schema, flag(request, "deleted"))
        return registry_response(found.to_json())

    async def delete_subject(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            deleted = await store.delete_subject(conn, request.match_info["subject"], flag(request, "permanent"))
        return registry_response(deleted)

    async def list_versions(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            found = await store.versions(conn, request.match_info["subject"], flag(request, "deleted"))
        return registry_response(found)

    async def register(self, request: web.Request) -> web.Response:
        schema, schema_type = parse_schema_request(await json_body(request))
        async with self.transaction() as conn:
            registered = await store.register(conn, request.match_info["subject"], schema, schema_type=schema_type)
        return registry_response({"id": registered.id})

    async def _version(self, request: web.Request) -> store.SubjectVersion:
        version = store.parse_version(request.match_info["version"])
        async with self.transaction() as conn:
            return await store.get_version(conn, request.match_info["subject"], version, flag(request, "deleted"))

    async def get_version(self, request: web.Request) -> web.Response:
        return registry_response((await self._version(request)).to_json())

    async def get_version_schema(self, request: web.Request) -> web.Response:
        found = await self._version(request)
        return web.Response(text=found.schema, content_type="application/json")

    async def delete_version(self, request: web.Request) -> web.Response:
        version = store.parse_version(request.match_info["version"])
        async with self.transaction() as conn:
            deleted = await store.delete_version(
                conn, request.match_info["subject"], version, flag(request, "permanent")
            )
        return registry_response(deleted)
