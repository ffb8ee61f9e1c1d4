"""The faust app of the transform worker: its web server and the storage sink, started and stopped together."""

from __future__ import annotations

from typing import Any

import asyncpg
import faust
import mode
from aiohttp import web
from aiokafka.client import AIOKafkaClient

from headrace.logs import setup_logging
from headrace.settings import Settings
from headrace.web import HttpService
from transform.sink import StorageSink


class TransformHttp(HttpService):
    """Health, readiness and metrics of the worker; ready when the sink reaches Kafka and Postgres."""

    name = "transform"

    def __init__(self, settings: Settings, sink: StorageSink) -> None:
        super().__init__(settings)
        self.sink = sink

    def kafka_client(self) -> AIOKafkaClient | None:
        return self.sink.consumer._client if self.sink.consumer is not None else None

    def postgres_pool(self) -> asyncpg.Pool | None:
        return self.sink.pool

    async def start(self) -> None:
        """The sink owns the pool and the Kafka clients; nothing to start here."""

    async def stop(self) -> None:
        """The sink closes what it owns."""


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
    # The sink owns its consumer and positions (see transform.sink); faust's own group consumer would
    # only join a group with nothing to read.
    app.boot_strategy.enable_kafka_consumer = False
    sink = StorageSink(settings, loop=app.loop, beacon=app.beacon)
    app.service(sink)
    app.web_server(WebServer(TransformHttp(settings, sink), settings.host, settings.transform_port))
    return app


def run(settings: Settings) -> None:
    setup_logging("transform", settings.log_level, settings.log_format)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False)
    worker.execute_from_commandline()
