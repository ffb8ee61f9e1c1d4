"""Prometheus helpers: the HTTP metrics every service shares and the /metrics response."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "headrace_http_requests_total", "HTTP requests answered, by route and status", ["service", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "headrace_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_IN_FLIGHT = Gauge("headrace_http_requests_in_flight", "HTTP requests being answered", ["service"])
READY = Gauge("headrace_ready", "1 when the service's Kafka and Postgres are reachable", ["service"])


def metrics_body() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def http_metrics_middleware(service: str) -> Middleware:
    in_flight = HTTP_IN_FLIGHT.labels(service)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The route's pattern, not the path, so that ids and tokens never become label values.
        resource = request.match_info.route.resource
        route = (resource.canonical.rstrip("/") or "/") if resource is not None else "unmatched"
        started = time.perf_counter()
        in_flight.inc()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            in_flight.dec()
            HTTP_REQUESTS.labels(service, route, str(status)).inc()
            HTTP_LATENCY.labels(service, route).observe(time.perf_counter() - started)

    return middleware
