"""Export and collector pages: definitions (secrets come masked from the APIs), runs and batches, run now, replay."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from console.backend import Backend, q
from console.rendering import render

RUNS_SHOWN = 20
MAX_ID_CHARS = 200


def pretty(definition: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    """A definition as indented JSON, without the fields the page shows elsewhere."""
    return orjson.dumps({k: v for k, v in definition.items() if k not in drop}, option=orjson.OPT_INDENT_2).decode()


class ExportPages:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/exports", self.exports)
        router.add_get("/exports/{name}", self.export)
        router.add_post("/exports/{name}/run", self.run_export)
        router.add_get("/collectors", self.collectors)
        router.add_get("/collectors/{name}", self.collector)
        router.add_post("/collectors/{name}/run", self.run_collector)
        router.add_post("/collectors/{name}/batches/{batch}/replay", self.replay_batch)

    async def exports(self, request: web.Request) -> web.Response:
        return render(request, "exports.html", exports=await self.backend.get("exporter", "/api/exports"))

    async def export(self, request: web.Request) -> web.Response:
        path = f"/api/exports/{q(request.match_info['name'])}"
        export = await self.backend.get("exporter", path)
        runs = await self.backend.get("exporter", f"{path}/runs", params={"limit": str(RUNS_SHOWN)})
        selected = request.query.get("run", "")[:MAX_ID_CHARS] or None
        return render(
            request,
            "export.html",
            export=export,
            definition=pretty(export, ("id", "created_at")),
            runs=runs,
            selected=selected,
            notice="Run started." if request.query.get("done") == "run" else None,
        )

    async def run_export(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.backend.post("exporter", f"/api/exports/{q(name)}/runs")  # a job: 202 at once
        raise web.HTTPSeeOther(f"/exports/{q(name)}?done=run")

    async def collectors(self, request: web.Request) -> web.Response:
        return render(request, "collectors.html", collectors=await self.backend.get("ingest", "/api/collectors"))

    async def collector(self, request: web.Request) -> web.Response:
        path = f"/api/collectors/{q(request.match_info['name'])}"
        collector = await self.backend.get("ingest", path)
        batches = await self.backend.get("ingest", f"{path}/batches")
        done = request.query.get("done")
        return render(
            request,
            "collector.html",
            collector=collector,
            definition=pretty(collector, ("id", "cursor", "batches", "next_run_at", "last_run_at", "last_error")),
            batches=batches,
            notice={"run": "Run started.", "replay": "Replay started."}.get(done or ""),
        )

    async def run_collector(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.backend.post("ingest", f"/api/collectors/{q(name)}/run")
        raise web.HTTPSeeOther(f"/collectors/{q(name)}?done=run")

    async def replay_batch(self, request: web.Request) -> web.StreamResponse:
        name, batch = request.match_info["name"], request.match_info["batch"]
        await self.backend.post("ingest", f"/api/collectors/{q(name)}/batches/{q(batch)}/replay")
        raise web.HTTPSeeOther(f"/collectors/{q(name)}?done=replay")
