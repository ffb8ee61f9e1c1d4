"""The faust app of the transform worker: its web server and the storage sink, started and stopped together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import faust
import mode
from aiohttp import web
from aiokafka.client import AIOKafkaClient

from headrace.logs import setup_logging
from headrace.settings import Settings
from headrace.web import HttpService
from headrace.web.auth import JSON_TYPES
from transform.flows.api import YAML_TYPES, FlowApi
from transform.flows.service import Flows
from transform.sink import StorageSink


class TransformHttp(HttpService):
    """Health, readiness and metrics of the worker (ready when the sink reaches Kafka and Postgres), and dataflows."""

    name = "transform"
    openapi_document = Path(__file__).with_name("openapi.yaml")
    body_types = {"/api/flows": JSON_TYPES | YAML_TYPES}

    def __init__(self, settings: Settings, sink: StorageSink) -> None:
        self.flows: Flows | None = None
        super().__init__(settings)
        self.sink = sink

    def add_routes(self, router: web.UrlDispatcher) -> None:
        FlowApi(self._started_flows).add_routes(router)

    def _started_flows(self) -> Flows:
        if self.flows is None:
            raise web.HTTPServiceUnavailable(text='{"error": "starting"}', content_type="application/json")
        return self.flows

    def kafka_client(self) -> AIOKafkaClient | None:
        return self.sink.consumer._client if self.sink.consumer is not None else None

    def postgres_pool(self) -> asyncpg.Pool | None:
        return self.sink.pool

    async def start(self) -> None:
        """The sink owns its pool and the Kafka clients; flows get a pool of their own."""
        self.flows = await Flows.start(self.settings)

    async def stop(self) -> None:
        """The sink closes what it owns; flows stop their runs and scheduler."""
        if self.flows is not None:
            await self.flows.stop()


class WebServer(mode.Service):
    """Serves an HttpService's aiohttp app inside the faust worker (faust's `App.web_server` hook)."""

    def __init__(self, http: HttpService, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http, self.host, self.port = http, host, port
        self._runner: web.AppRunner | None = None

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def on_start(self) -> None:
        await self.http.start()
        self._runner = web.AppRunner(self.http.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.http.stop()


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        f"{settings.topic_prefix}-transform",
        broker=f"kafka://{settings.require_kafka_bootstrap()}",
        store="memory://",
        producer_acks=-1,
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        web_enabled=True,
        web_host=settings.host,
        web_port=settings.transform_port,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_session_timeout_ms / 3000,
    )
    # The sink owns its consumer, producer and positions (see transform.sink); faust's own Kafka clients would
    # only join a group with nothing to read, and need TLS and SASL settings of their own.
    app.boot_strategy.enable_kafka = False
    sink = StorageSink(settings, loop=app.loop, beacon=app.beacon)
    # faust starts a service instance as well as a class (App._prepare_subservice); its signature names classes only.
    app.service(sink)  # type: ignore[arg-type]
    app.web_server(WebServer(TransformHttp(settings, sink), settings.host, settings.transform_port))
    return app


def run(settings: Settings) -> None:
    setup_logging("transform", settings.log_level, settings.log_format)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False)
    worker.execute_from_commandline()
