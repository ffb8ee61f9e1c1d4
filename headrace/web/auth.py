"""The one route guard of every service: the admin token on every route not declared open, and JSON-only bodies.

A route is open only when its service says so (health, readiness, metrics, API documents, the push URL, which
carries its own token). Every other route — management and data alike, known or not — needs the admin token,
as `Authorization: Bearer <token>` or HTTP Basic with the token as password (any user name), which is how
Confluent clients' `basic.auth.user.info` reaches the schema registry. A request with a body must declare one of
the content types its route accepts (JSON unless the route says otherwise), so no cross-site form post is ever
taken for an API call.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

JSON_TYPES = frozenset({"application/json"})
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Refusal = Callable[[int, str, dict[str, str]], web.StreamResponse]


@dataclass(frozen=True)
class AccessPolicy:
    """Which routes (by their canonical path, e.g. `/api/storages/{name}`) are open, and what bodies each takes."""

    open_paths: frozenset[str] = OPEN_PATHS
    body_types: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default_body_types: frozenset[str] = JSON_TYPES

    def accepted_types(self, path: str) -> frozenset[str]:
        return self.body_types.get(path, self.default_body_types)


def presented_token(request: web.Request) -> str | None:
    """The token of a Bearer header, or the password of a Basic one."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def token_matches(presented: str | None, expected: str) -> bool:
    """Compared in constant time, so the answer's timing tells nothing about the token."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def _has_body(request: web.Request) -> bool:
    return request.method in BODY_METHODS and request.body_exists


def route_path(request: web.Request) -> str:
    """The canonical path of the route a request matched (`/api/storages/{name}`), or its own path if none.

    A route's trailing-slash twin (headrace.web.routing) is known by the route's own path.
    """
    resource = request.match_info.route.resource
    if resource is None:
        return request.path
    return resource.canonical.rstrip("/") or "/"


def admin_guard(
    admin_token: str, policy: AccessPolicy, refuse: Refusal
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware: 401 without the token (outside open routes); 415 for a body the route does not take."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = route_path(request)
        if path in policy.open_paths:
            return await handler(request)
        if not token_matches(presented_token(request), admin_token):
            return refuse(
                401,
                "this route needs the admin token: `Authorization: Bearer <token>`, or HTTP Basic with it as password",
                {"WWW-Authenticate": 'Bearer realm="headrace"'},
            )
        if _has_body(request):
            accepted = policy.accepted_types(path)
            if request.content_type not in accepted:
                return refuse(
                    415,
                    f"unsupported Content-Type {request.headers.get('Content-Type', '(none)')!r}:"
                    f" send {' or '.join(sorted(accepted))}",
                    {},
                )
        return await handler(request)

    return guard
