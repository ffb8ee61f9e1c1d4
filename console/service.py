"""The console service: its routes, the login, static files, and the backend session to the other services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from console.backend import Backend, BackendError
from console.exports import ExportPages
from console.flows import FlowPages
from console.overview import OverviewPage
from console.rendering import load_static, render
from console.session import (
    COOKIE,
    LOGIN_PATH,
    console_guard,
    login_matches,
    safe_next,
    set_login_cookie,
)
from console.storages import StoragePages
from headrace.settings import Settings
from headrace.web import HttpService
from headrace.web.auth import AccessPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def backend_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A service's refusal or absence becomes a page saying so, with the service's own message."""
    try:
        return await handler(request)
    except BackendError as exc:
        status = exc.status if exc.status in (404, 409, 422) else 502
        return render(request, "error.html", status=status, message=exc.message, upstream=exc.status)


class ConsoleService(HttpService):
    """Pages for people, over the services' APIs; no database or broker of its own."""

    name = "console"
    # Forms only, and small ones: a storage's name, a token, a few fields (every field is bounded again by its page).
    max_body_bytes = 64 * 1024

    def __init__(self, settings: Settings) -> None:
        self.backend = Backend(settings)
        self.static = load_static()
        super().__init__(settings)
        self.app.middlewares.append(backend_errors)

    def access_guard(self, policy: AccessPolicy) -> Callable[..., Awaitable[web.StreamResponse]]:
        return console_guard(self.settings.require_admin_token(), policy)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(LOGIN_PATH, self.login_form)
        router.add_post(LOGIN_PATH, self.login)
        router.add_post("/logout", self.logout)
        router.add_get("/static/{file}", self.static_file)
        OverviewPage(self.backend).register(router)
        StoragePages(self.backend).register(router)
        FlowPages(self.backend).register(router)
        ExportPages(self.backend).register(router)

    async def start(self) -> None:
        await self.backend.start()

    async def stop(self) -> None:
        await self.backend.stop()

    async def readiness(self) -> dict[str, bool]:
        # No database or broker of its own: ready once listening. The services it shows say their own health.
        return {}

    async def login_form(self, request: web.Request) -> web.Response:
        return render(request, "login.html", next=safe_next(request.query.get("next")), error=None)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token, target = form.get("token"), form.get("next")
        target = safe_next(target if isinstance(target, str) else None)
        if not isinstance(token, str) or not login_matches(self.settings.require_admin_token(), token):
            return render(request, "login.html", status=401, next=target, error="That is not the admin token.")
        response = web.HTTPSeeOther(target)
        set_login_cookie(response, self.settings.require_admin_token(), secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther(LOGIN_PATH)
        response.del_cookie(COOKIE, path="/")
        return response

    async def static_file(self, request: web.Request) -> web.Response:
        found = self.static.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "max-age=3600"})
