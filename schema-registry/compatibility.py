"""Routes of compatibility checks: a candidate schema against one version or against the subject's rule."""

from __future__ import annotations

from aiohttp import web
from schema_registry.api import Router, flag, json_body, registry_response

from headrace.registry import store
from headrace.registry.schemas import parse_schema_request


def _answer(request: web.Request, problems: list[str]) -> web.Response:
    body: dict[str, object] = {"is_compatible": not problems}
    if flag(request, "verbose"):
        body["messages"] = problems
    return registry_response(body)


class CompatibilityRouter(Router):
    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/compatibility/subjects/{subject}/versions/{version}", self.check_version)
        router.add_post("/compatibility/subjects/{subject}/versions", self.check_all)

    async def check_version(self, request: web.Request) -> web.Response:
        version = store.parse_version(request.match_info["version"])
        schema, _ = parse_schema_request(await json_body(request))
        async with self.transaction() as conn:
            problems = await store.check_compatibility(conn, request.match_info["subject"], version, schema)
        return _answer(request, problems)

    async def check_all(self, request: web.Request) -> web.Response:
        schema, _ = parse_schema_request(await json_body(request))
        async with self.transaction() as conn:
            problems = await store.check_compatibility_all(conn, request.match_info["subject"], schema)
        return _answer(request, problems)
