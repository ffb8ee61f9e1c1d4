"""Routes answer with or without a trailing slash, as Confluent's registry does (some clients call `GET /config/`)."""

from __future__ import annotations

from aiohttp import web


def also_with_trailing_slash(router: web.UrlDispatcher) -> None:
    """Register every route again under its path plus `/`, same handler.

    Served, not redirected: python-schema-registry-client (httpx) does not follow redirects. The guard and the
    metrics know both paths by the one without the slash (headrace.web.auth.route_path).
    """
    for route in list(router.routes()):
        resource = route.resource
        if resource is None or resource.canonical.endswith("/"):
            continue
        router.add_route(route.method, resource.canonical + "/", route.handler)
