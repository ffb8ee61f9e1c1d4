"""A service with an explicit start()/stop() lifecycle, served over aiohttp with /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import yaml
from aiohttp import web
from aiokafka.client import AIOKafkaClient

from headrace import __version__
from headrace.heap import freeze_startup_objects
from headrace.kafka import kafka_reachable
from headrace.logs import setup_logging
from headrace.metrics import READY, http_metrics_middleware, metrics_body
from headrace.postgres import create_pool, migrate, postgres_reachable
from headrace.settings import Settings
from headrace.web.auth import JSON_TYPES, OPEN_PATHS, AccessPolicy, admin_guard
from headrace.web.routing import also_with_trailing_slash

log = logging.getLogger(__name__)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_UTC_Z, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def json_error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status, headers=headers)


class HttpService:
    """Base of the aiohttp services. Subclasses add routes and say which Kafka client proves readiness.

    Every route needs the admin token (headrace.web.auth) unless the service lists it in `open_paths`; a service
    without a token refuses to start.
    """

    name = "service"
    # Passed to aiohttp's request handler, e.g. {"auto_decompress": False} for a service that inflates bodies itself.
    handler_args: dict[str, Any] = {}
    # Routes served without the admin token, by canonical path; and the body types of routes that take non-JSON.
    open_paths: frozenset[str] = OPEN_PATHS
    body_types: dict[str, frozenset[str]] = {}
    default_body_types: frozenset[str] = JSON_TYPES
    # Largest body a route may read whole (request.read/json); routes that stream bodies bound them themselves.
    max_body_bytes = 1024 * 1024
    # The service's OpenAPI document, served (without the token) at /openapi.yaml and /openapi.json.
    openapi_document: Path | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        open_paths = self.open_paths | ({"/openapi.yaml", "/openapi.json"} if self.openapi_document else set())
        policy = AccessPolicy(frozenset(open_paths), self.body_types, self.default_body_types)
        guard = self.access_guard(policy)
        self.app = web.Application(
            middlewares=[http_metrics_middleware(self.name), guard],
            client_max_size=self.max_body_bytes,
            handler_args=self.handler_args or None,
        )
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        if self.openapi_document is not None:
            text = self.openapi_document.read_bytes()
            as_json = orjson.dumps(yaml.safe_load(text))

            async def openapi_yaml(_: web.Request) -> web.Response:
                return web.Response(body=text, content_type="application/yaml")

            async def openapi_json(_: web.Request) -> web.Response:
                return web.Response(body=as_json, content_type="application/json")

            self.app.router.add_get("/openapi.yaml", openapi_yaml)
            self.app.router.add_get("/openapi.json", openapi_json)
        self.add_routes(self.app.router)
        also_with_trailing_slash(self.app.router)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Subclasses register their own routes here."""

    def access_guard(self, policy: AccessPolicy) -> Callable[..., Awaitable[web.StreamResponse]]:
        """The middleware every request passes: the admin token (headrace.web.auth); the console, whose visitors
        are browsers, replaces it with its login cookie and CSRF check."""
        return admin_guard(self.settings.require_admin_token(), policy, self.refuse)

    def refuse(self, status: int, message: str, headers: dict[str, str]) -> web.StreamResponse:
        """The answer the guard gives (401, 415) in this service's error shape."""
        return json_error(status, message, headers=headers)

    def kafka_client(self) -> AIOKafkaClient | None:
        """The client whose reach to the cluster tells readiness."""
        return None

    def postgres_pool(self) -> asyncpg.Pool | None:
        """The pool whose reach to Postgres tells readiness."""
        return self.pool

    async def start(self) -> None:
        self.pool = await create_pool(self.settings, application_name=f"headrace-{self.name}")
        await migrate(self.pool)

    async def drain(self) -> None:
        """Called once the service stops listening: wait for the requests already inside to finish."""

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def readiness(self) -> dict[str, bool]:
        pool = self.postgres_pool()
        checks = {"postgres": pool is not None and await postgres_reachable(pool)}
        client = self.kafka_client()
        checks["kafka"] = client is not None and await kafka_reachable(client)
        return checks

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "alive", "service": self.name, "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = await self.readiness()
        ready = all(checks.values())
        READY.labels(self.name).set(1 if ready else 0)
        return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics_body()
        return web.Response(body=body, headers={"Content-Type": content_type})


async def serve(service: HttpService, host: str, port: int) -> None:
    """Run until SIGTERM or SIGINT: listen, then on a signal stop accepting, drain, and stop the service."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await service.start()
    freeze_startup_objects()
    runner = web.AppRunner(service.app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    await site.start()
    log.info("listening", extra={"url": f"http://{host}:{port}"})
    try:
        await stopping.wait()
    finally:
        log.info("stopping")
        # Stop listening, let the requests already inside finish (aiohttp's cleanup would drop the rest of a body
        # still arriving), then close connections, then the service closes its clients.
        await site.stop()
        await service.drain()
        await runner.cleanup()
        await service.stop()
        log.info("stopped")


def run_service(service_cls: type[HttpService], settings: Settings) -> None:
    setup_logging(service_cls.name, settings.log_level, settings.log_format)
    service = service_cls(settings)
    asyncio.run(serve(service, settings.host, settings.service_port(service_cls.name)))
