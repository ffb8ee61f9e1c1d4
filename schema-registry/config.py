"""Routes of compatibility configuration: global and per subject."""

from __future__ import annotations

from aiohttp import web
from schema_registry.api import Router, flag, json_body, registry_response

from headrace.registry import store


def _level(body: object) -> object:
    return body.get("compatibility") if isinstance(body, dict) else None


class ConfigRouter(Router):
    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/config", self.get_global)
        router.add_put("/config", self.put_global)
        router.add_get("/config/{subject}", self.get_subject)
        router.add_put("/config/{subject}", self.put_subject)
        router.add_delete("/config/{subject}", self.delete_subject)

    async def get_global(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            level = await store.get_config(conn)
        return registry_response({"compatibilityLevel": level})

    async def put_global(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        async with self.transaction() as conn:
            level = await store.set_config(conn, None, _level(body))
        return registry_response({"compatibility": level})

    async def get_subject(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            level = await store.get_config(conn, request.match_info["subject"], flag(request, "defaultToGlobal"))
        return registry_response({"compatibilityLevel": level})

    async def put_subject(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        async with self.transaction() as conn:
            level = await store.set_config(conn, request.match_info["subject"], _level(body))
        return registry_response({"compatibility": level})

    async def delete_subject(self, request: web.Request) -> web.Response:
        async with self.transaction() as conn:
            level = await store.delete_config(conn, request.match_info["subject"])
        return registry_response({"compatibility": level})
