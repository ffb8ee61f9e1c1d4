"""Routes of schemas by id: the schema, the subject versions holding it, and the supported types."""

from __future__ import annotations

from aiohttp import web
from schema_registry.api import Router, flag, registry_response

from headrace.registry import store
from headrace.registry.errors import SchemaNotFound
from headrace.registry.schemas import SUPPORTED_TYPES

# Schema ids are Postgres integers; anything past them names no schema (and must not reach the query).
MAX_SCHEMA_ID = 2**31 - 1


def schema_id(request: web.Request) -> int:
    text = request.match_info["id"]
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value <= MAX_SCHEMA_ID:
        raise SchemaNotFound(f"Schema {text[:40]} not found")
    return value


class SchemasRouter(Router):
    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/schemas/types", self.types)
        router.add_get("/schemas/ids/{id}", self.get_schema)
        router.add_get("/schemas/ids/{id}/schema", self.get_raw_schema)
        router.add_get("/schemas/ids/{id}/versions", self.versions)
        router.add_get("/schemas/ids/{id}/subjects", self.subjects)

    async def types(self, request: web.Request) -> web.Response:
        return registry_response(list(SUPPORTED_TYPES))

    async def get_schema(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            text, schema_type = await store.get_schema(conn, schema_id(request))
        body = {"schema": text}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        return registry_response(body)

    async def get_raw_schema(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            text, _ = await store.get_schema(conn, schema_id(request))
        return web.Response(text=text, content_type="application/json")

    async def versions(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            found = await store.schema_versions(conn, schema_id(request), flag(request, "deleted"))
        return registry_response(found)

    async def subjects(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            found = await store.schema_versions(conn, schema_id(request), flag(request, "deleted"))
        return registry_response(sorted({v["subject"] for v in found}))
