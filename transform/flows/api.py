"""The /api/flows routes of the transform service: apply (JSON or YAML), list, show, delete, run, runs, plan, graph."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from headrace.flows.definitions import FlowError, load_text, parse_flow
from headrace.flows.lineage import flow_graph
from headrace.flows.validate import check_flow
from headrace.web.errors import INVALID_INPUT, ErrorAnswers, guarded, invalid
from headrace.web.service import json_response
from transform.flows.runner import RunInProgress
from transform.flows.store import FlowNotFound, RunNotFound

if TYPE_CHECKING:
    from transform.flows.service import Flows

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


def field_path(field: str) -> list[str | int]:
    """`steps.a.stages[0].filter` as the path of the one error convention: ["steps", "a", "stages", 0, "filter"]."""
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", field) if p]


def _invalid_flow(exc: FlowError) -> web.Response:
    return invalid([{"path": field_path(e["field"]), "message": e["message"]} for e in exc.errors])


# The one error convention (headrace.web.errors): an invalid definition is 422 with the path of each field at fault.
FLOW_ERRORS: ErrorAnswers = [
    (FlowError, _invalid_flow),
    ((FlowNotFound, RunNotFound), 404),
    (RunInProgress, 409),
    *INVALID_INPUT,
]


class FlowApi:
    def __init__(self, flows: Callable[[], Flows]) -> None:
        self._flows = flows  # the service's flows part exists once the service has started

    def add_routes(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/api/flows", self.list),
            ("POST", "/api/flows", self.apply),
            ("GET", "/api/flows/{name}", self.show),
            ("DELETE", "/api/flows/{name}", self.delete),
            ("POST", "/api/flows/{name}/runs", self.run),
            ("GET", "/api/flows/{name}/runs", self.runs),
            ("GET", "/api/flows/{name}/runs/{id}", self.run_detail),
            ("POST", "/api/flows/{name}/plan", self.plan),
            ("GET", "/api/flows/{name}/graph", self.graph),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, self._guarded(handler))

    def _guarded(self, handler: Handler) -> Handler:
        return guarded(handler, FLOW_ERRORS)

    async def _options(self, request: web.Request) -> dict[str, Any]:
        """A run's or a plan's body: {"params": {...}, "rerun_of": "<run id>"}; none at all is fine."""
        raw = await request.read()
        body = load_text(raw) if raw.strip() else {}
        if not isinstance(body, dict) or set(body) - {"params", "rerun_of"}:
            raise FlowError([{"field": "body", "message": 'the body is {"params": {…}, "rerun_of": "<run id>"}'}])
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise FlowError([{"field": "params", "message": "params is an object: parameter name -> value(s)"}])
        return body

    async def list(self, request: web.Request) -> web.Response:
        """Every flow with its latest run (`last_run`, null before the first)."""
        store = self._flows().store
        last = await store.last_runs()
        return json_response([f.to_json() | {"last_run": last.get(f.id)} for f in await store.list()])

    async def apply(self, request: web.Request) -> web.Response:
        flows = self._flows()
        flow = parse_flow(load_text(await request.read(), request.content_type))
        checked = await check_flow(flow, flows.catalog)
        stored, created = await flows.store.apply(flow)
        return json_response(stored.to_json() | {"warnings": checked.warnings}, status=201 if created else 200)

    async def show(self, request: web.Request) -> web.Response:
        return json_response((await self._flows().store.get(request.match_info["name"])).to_json())

    async def delete(self, request: web.Request) -> web.Response:
        await self._flows().store.delete(request.match_info["name"])
        return json_response({"deleted": request.match_info["name"]})

    async def run(self, request: web.Request) -> web.Response:
        flows = self._flows()
        stored = await flows.store.get(request.match_info["name"])
        options = await self._options(request)
        rerun_of = _run_id(options["rerun_of"]) if options.get("rerun_of") else None
        if rerun_of is not None:
            await flows.store.run(stored.id, rerun_of)  # 404 for a run of another flow
        trigger = "rerun" if rerun_of else "api"
        run_id = await flows.runner.start(stored, trigger, options.get("params") or {}, rerun_of)
        if request.query.get("wait", "").lower() in ("1", "true", "yes"):
            await flows.runner.wait(run_id)
            return json_response(await flows.store.run(stored.id, run_id))
        return json_response({"id": str(run_id), "status": "running"}, status=202)

    async def runs(self, request: web.Request) -> web.Response:
        flows = self._flows()
        stored = await flows.store.get(request.match_info["name"])
        return json_response(await flows.store.runs(stored.id))

    async def run_detail(self, request: web.Request) -> web.Response:
        flows = self._flows()
        stored = await flows.store.get(request.match_info["name"])
        return json_response(await flows.store.run(stored.id, _run_id(request.match_info["id"])))

    async def plan(self, request: web.Request) -> web.Response:
        flows = self._flows()
        stored = await flows.store.get(request.match_info["name"])
        options = await self._options(request)
        return json_response(await flows.planner.plan(stored.flow, options.get("params") or {}, stored.id))

    async def graph(self, request: web.Request) -> web.Response:
        flows = self._flows()
        stored = await flows.store.get(request.match_info["name"])
        try:
            checked = await check_flow(stored.flow, flows.catalog)
        except FlowError:
            # The catalog changed since the flow was applied: the graph without column lineage is still the graph.
            from headrace.flows.graph import build_dag
            from headrace.flows.validate import Checked

            checked = Checked(build_dag(stored.flow))
        return json_response(flow_graph(stored.flow, checked, await flows.store.last_statuses(stored.id)))


def _run_id(text: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(text))
    except ValueError:
        raise RunNotFound(f"no run {str(text)[:60]!r}") from None


__all__ = ["YAML_TYPES", "FlowApi"]
