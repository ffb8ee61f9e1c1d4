"""Chaos fixtures: the services as separate processes that a test can kill -9 and start again at will."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from headrace.platform.processes import free_port
from tests.conftest import clean_environ
from tests.services import ServiceProcess


@dataclass
class Cluster:
    """ingest, two transform workers and the exporter, sharing a topic prefix no other test uses."""

    env: dict[str, str]
    services: dict[str, ServiceProcess]

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    async def start(self) -> None:
        for service in self.services.values():
            service.start()
        for service in self.services.values():
            await service.ready()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()


@pytest.fixture
def cluster(kafka_bootstrap: str, database_url: str, work_dir: Path) -> Iterator[Cluster]:
    prefix = f"tc{uuid.uuid4().hex[:8]}"
    log_dir = work_dir / prefix
    log_dir.mkdir()
    env = clean_environ() | {
        "HEADRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HEADRACE_DATABASE_URL": database_url,
        "HEADRACE_TOPIC_PREFIX": prefix,
        "HEADRACE_LOG_LEVEL": "WARNING",
        "HEADRACE_DATABASE_POOL_SIZE": "4",
        "HEADRACE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "HEADRACE_COLLECTOR_POLL_SECONDS": "1",
        "HEADRACE_EXPORTER_SCHEDULER": "false",
    }
    ports = {name: free_port() for name in ("ingest", "exporter")}
    env |= {"HEADRACE_INGEST_PORT": str(ports["ingest"]), "HEADRACE_EXPORTER_PORT": str(ports["exporter"])}
    specs = [
        ("ingest", "ingest", "HEADRACE_INGEST_PORT"),
        ("transform-0", "transform", "HEADRACE_TRANSFORM_PORT"),
        ("transform-1", "transform", "HEADRACE_TRANSFORM_PORT"),
        ("exporter", "exporter", "HEADRACE_EXPORTER_PORT"),
    ]
    services = {
        name: ServiceProcess(
            name, module, env, variable, log_dir / f"{name}.log", **({"port": ports[name]} if name in ports else {})
        )
        for name, module, variable in specs
    }
    cluster = Cluster(env, services)
    yield cluster
    cluster.stop()
