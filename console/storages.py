"""Storage pages: the list with rows and last write, a storage's model, history, rows, rejected rows and its actions."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from console.backend import Backend, BackendError, q
from console.forms import MAX_NAME_CHARS, FormError, name_list, text_field
from console.rendering import render

LOAD_MODES = ("append", "merge", "replace")
ROWS_SHOWN = 20
REJECTED_SHOWN = 50


def history_diffs(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model version as what it changed, newest first, with the cause said in words."""
    diffs = []
    for version in history:
        change = version.get("change") or {}
        added = change.get("added") or []
        widened = change.get("widened") or []
        causes = []
        if added:
            causes.append(f"{len(added)} new field{'s' if len(added) > 1 else ''} in the rows written")
        for item in widened:
            causes.append(f"a {item.get('to')} value arrived in {item.get('column')} ({item.get('from')})")
        diffs.append(
            {
                "version": version.get("version"),
                "created_at": version.get("created_at"),
                "added": added,
                "widened": widened,
                "cause": "; ".join(causes) if causes else "the storage was created",
            }
        )
    return list(reversed(diffs))


class StoragePages:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/storages", self.index)
        router.add_post("/storages", self.create)
        router.add_get("/storages/{name}", self.show)
        router.add_post("/storages/{name}/lock", self.lock)
        router.add_post("/storages/{name}/unlock", self.unlock)
        router.add_post("/storages/{name}/token", self.rotate)
        router.add_post("/storages/{name}/replay", self.replay)

    async def index(self, request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
        storages = await self.backend.get("ingest", "/api/storages", params={"stats": "true"})
        return render(request, "storages.html", status=status, storages=storages, load_modes=LOAD_MODES, error=error)

    async def create(self, request: web.Request) -> web.Response:
        try:
            name = await text_field(request, "name", MAX_NAME_CHARS)
            key = name_list(await text_field(request, "primary_key", 1000, required=False))
            mode = await text_field(request, "load_mode", 16)
            if mode not in LOAD_MODES:
                raise FormError(f"load_mode: one of {', '.join(LOAD_MODES)}")
            created = await self.backend.post(
                "ingest", "/api/storages", {"name": name, "primary_key": key, "load_mode": mode}
            )
        except FormError as exc:
            return await self.index(request, str(exc), 422)
        except BackendError as exc:
            if exc.status >= 500:
                raise
            return await self.index(request, exc.message, exc.status)
        # The only time the token is shown: this answer, not a page anyone can load again.
        return await self.page(request, name, push_url=created["push_url"], notice="Storage created.")

    async def show(self, request: web.Request) -> web.Response:
        return await self.page(request, request.match_info["name"], notice=_notice(request))

    async def page(
        self, request: web.Request, name: str, push_url: str | None = None, notice: str | None = None
    ) -> web.Response:
        path = f"/api/storages/{q(name)}"
        storage = await self.backend.get("ingest", path)  # a 404 here is the page's 404
        found = await self.backend.gather(
            history=self.backend.get("ingest", f"{path}/history"),
            latest=self.backend.post(
                "ingest", f"{path}/query", {"order_by": [["_inserted_at", "desc"]], "limit": ROWS_SHOWN}
            ),
            count=self.backend.post("ingest", f"{path}/query", {"aggregates": {"n": ["count", "*"]}}),
            rejected=self.backend.get("ingest", f"{path}/rejected"),
        )
        failures = {key: value.message for key, value in found.items() if isinstance(value, BackendError)}
        latest = found["latest"] if "latest" not in failures else {"columns": [], "rows": []}
        count = found["count"]["rows"][0][0] if "count" not in failures and found["count"]["rows"] else None
        rejected = found["rejected"] if "rejected" not in failures else []
        return render(
            request,
            "storage.html",
            storage=storage,
            history=history_diffs(found["history"]) if "history" not in failures else [],
            latest=latest,
            count=count,
            rejected=rejected[:REJECTED_SHOWN],
            rejected_total=len(rejected),
            push_url=push_url,
            notice=notice,
            failures=failures,
        )

    async def lock(self, request: web.Request) -> web.StreamResponse:
        return await self._act(request, "lock", "locked")

    async def unlock(self, request: web.Request) -> web.StreamResponse:
        return await self._act(request, "unlock", "unlocked")

    async def replay(self, request: web.Request) -> web.StreamResponse:
        # A job on ingest (202): the page shows the rows replayed once transform wrote them.
        return await self._act(request, "rejected/replay", "replay")

    async def _act(self, request: web.Request, action: str, notice: str) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.backend.post("ingest", f"/api/storages/{q(name)}/{action}")
        raise web.HTTPSeeOther(f"/storages/{q(name)}?done={notice}")

    async def rotate(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        rotated = await self.backend.post("ingest", f"/api/storages/{q(name)}/token")
        return await self.page(
            request, name, push_url=rotated["push_url"], notice="New push token: the previous one no longer works."
        )


NOTICES = {
    "locked": "The model is locked: values that do not fit go to rejected rows.",
    "unlocked": "The model is unlocked: it widens again.",
    "replay": "Replay started: the rejected rows go through the storage's topic again.",
}


def _notice(request: web.Request) -> str | None:
    return NOTICES.get(request.query.get("done", ""))
