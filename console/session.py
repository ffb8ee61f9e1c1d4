"""The console's login: a stateless signed cookie from the admin token, a CSRF token on every POST, and the guard.

The cookie's value is `<issued_at>.<hmac(admin_token, issued_at)>`: nothing is stored, so a restart keeps everyone
logged in while a rotated admin token logs everyone out. Each form carries `hmac(admin_token, "csrf:" + cookie)`,
which a cross-site page cannot compute (SameSite=Strict already keeps the cookie off cross-site requests).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from headrace.web.auth import AccessPolicy, route_path, token_matches

COOKIE = "headrace_console"
LIFETIME_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
# Bounds of what the login form and the cookie may carry: longer is refused before any hashing.
MAX_TOKEN_CHARS = 512
MAX_COOKIE_CHARS = 128
OPEN_PREFIXES = ("/static/",)
LOGIN_PATH = "/login"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _sign(admin_token: str, message: str) -> str:
    return hmac.new(admin_token.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_cookie(admin_token: str, now: float | None = None) -> str:
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{_sign(admin_token, issued)}"


def cookie_valid(admin_token: str, value: str | None, now: float | None = None) -> bool:
    """Signed with the current admin token, and issued less than 12 hours ago (not in the future either)."""
    if not value or len(value) > MAX_COOKIE_CHARS:
        return False
    issued, _, signature = value.partition(".")
    if not issued.isdigit() or not hmac.compare_digest(signature.encode(), _sign(admin_token, issued).encode()):
        return False
    age = (time.time() if now is None else now) - int(issued)
    return 0 <= age < LIFETIME_SECONDS


def csrf_token(admin_token: str, cookie: str) -> str:
    return _sign(admin_token, "csrf:" + cookie)


def login_matches(admin_token: str, presented: str) -> bool:
    return len(presented) <= MAX_TOKEN_CHARS and token_matches(presented, admin_token)


def set_login_cookie(response: web.StreamResponse, admin_token: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        new_cookie(admin_token),
        max_age=LIFETIME_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


def console_guard(admin_token: str, policy: AccessPolicy) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Pages need the login cookie (else a redirect to /login); a POST also needs the form's CSRF token (else 403).

    The login form itself is open: it proves the token instead. Health, readiness, metrics and static files are open.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = route_path(request)
        if path in policy.open_paths or request.path.startswith(OPEN_PREFIXES) or path == LOGIN_PATH:
            return await handler(request)
        cookie = request.cookies.get(COOKIE)
        if not cookie_valid(admin_token, cookie):
            if request.method != "GET":
                return web.Response(status=403, text="log in first")
            target = request.path_qs if request.path != "/" else ""
            raise web.HTTPSeeOther(LOGIN_PATH + (f"?next={quote(target, safe='')}" if target else ""))
        assert cookie is not None
        request["csrf_token"] = csrf_token(admin_token, cookie)
        if request.method != "GET" and request.method != "HEAD":
            if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
                return web.Response(status=403, text="forms only")
            form = await request.post()
            presented = form.get(CSRF_FIELD)
            if not isinstance(presented, str) or not hmac.compare_digest(
                presented.encode(), request["csrf_token"].encode()
            ):
                return web.Response(status=403, text="missing or wrong CSRF token")
        return await handler(request)

    return guard


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of this console only, never another site (`//evil`, `http://…`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or len(target) > 2048:
        return "/"
    return target
