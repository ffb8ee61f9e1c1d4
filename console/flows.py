"""Dataflow pages (D6): the list, a flow's graph with the selected node's definition, SQL and runs, its timeline."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from markupsafe import Markup

from console.backend import Backend, BackendError, q
from console.graph import render_flow_svg
from console.rendering import render
from console.timeline import render_timeline_svg

# A node's runs: the step's attempts in this many latest runs of its flow.
RUNS_PER_NODE = 5
MAX_NODE_CHARS = 200


class FlowPages:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/flows", self.index)
        router.add_get("/flows/{name}", self.show)
        router.add_post("/flows/{name}/run", self.run)

    async def index(self, request: web.Request) -> web.Response:
        flows = await self.backend.get("transform", "/api/flows")
        return render(request, "flows.html", flows=flows)

    async def show(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = f"/api/flows/{q(name)}"
        node = request.query.get("node", "")[:MAX_NODE_CHARS] or None
        flow, graph, runs = await asyncio.gather(
            self.backend.get("transform", path),
            self.backend.get("transform", f"{path}/graph"),
            self.backend.get("transform", f"{path}/runs"),
        )
        run_id = request.query.get("run", "")[:40] or (runs[0]["id"] if runs else None)
        selected_run = await self._run(path, run_id)
        step = _step(flow, node)
        details = await self._node_details(path, step, runs) if step is not None else {}
        running = any(run["status"] == "running" for run in runs[:1])
        return render(
            request,
            "flow.html",
            flow=flow,
            graph=graph,
            # The SVG modules escape every name they draw; their output is markup, not text.
            graph_svg=Markup(render_flow_svg(graph, node)),
            timeline_svg=Markup(render_timeline_svg(selected_run)) if selected_run else None,
            runs=runs,
            selected_run=selected_run,
            node=node,
            node_info=_node_info(graph, node),
            step=step,
            running=running,
            **details,
        )

    async def _run(self, path: str, run_id: str | None) -> dict[str, Any] | None:
        if run_id is None:
            return None
        try:
            run: dict[str, Any] = await self.backend.get("transform", f"{path}/runs/{q(run_id)}")
        except BackendError as exc:
            if exc.status != 404:
                raise
            return None
        return run

    async def _node_details(self, path: str, step: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
        """A step's compiled SQL (the dry run's) and its attempts in the latest runs."""
        latest = runs[:RUNS_PER_NODE]
        found = await self.backend.gather(
            plan=self.backend.post("transform", f"{path}/plan"),
            **{f"run{i}": self.backend.get("transform", f"{path}/runs/{q(run['id'])}") for i, run in enumerate(latest)},
        )
        plan = found.pop("plan")
        sql, plan_error = None, None
        if isinstance(plan, BackendError):
            plan_error = plan.message
        else:
            sql = next((s.get("sql") for s in plan.get("steps", []) if s.get("step") == step["name"]), None)
        attempts = [
            attempt | {"run_id": detail["id"]}
            for detail in found.values()
            if not isinstance(detail, BackendError)
            for attempt in detail.get("steps", [])
            if attempt.get("step") == step["name"]
        ]
        return {"step_sql": sql, "plan_error": plan_error, "step_attempts": attempts}

    async def run(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        started = await self.backend.post("transform", f"/api/flows/{q(name)}/runs")
        raise web.HTTPSeeOther(f"/flows/{q(name)}?run={q(started['id'])}")


def _step(flow: dict[str, Any], node: str | None) -> dict[str, Any] | None:
    if node is None or not node.startswith("step:"):
        return None
    wanted = node.removeprefix("step:")
    steps: list[dict[str, Any]] = flow.get("definition", {}).get("steps", [])
    return next((s for s in steps if s.get("name") == wanted), None)


def _node_info(graph: dict[str, Any], node: str | None) -> dict[str, Any] | None:
    """The selected node with the nodes it reads from and writes to."""
    if node is None:
        return None
    found: dict[str, Any] | None = next((n for n in graph.get("nodes", []) if n.get("id") == node), None)
    if found is None:
        return None
    edges = graph.get("edges", [])
    return found | {
        "inputs": [e["from"] for e in edges if e.get("to") == node],
        "outputs": [e["to"] for e in edges if e.get("from") == node],
    }
