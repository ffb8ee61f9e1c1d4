"""The schema-registry service run in-process, in its own thread and event loop, for blocking HTTP clients."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import web
from confluent_kafka.schema_registry import SchemaRegistryClient
from schema_registry.service import SchemaRegistryService

from headrace.platform.processes import free_port
from headrace.settings import Settings
from tests.conftest import TEST_ADMIN_TOKEN


@pytest.fixture(scope="session")
def registry_url(settings: Settings) -> Iterator[str]:
    port = free_port()
    service_settings = settings.model_copy(update={"schema_registry_port": port})
    started = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        service = SchemaRegistryService(service_settings)
        await service.start()
        runner = web.AppRunner(service.app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stopping = asyncio.Event()
        state["loop"], state["stopping"] = asyncio.get_running_loop(), stopping
        started.set()
        try:
            await stopping.wait()
        finally:
            await runner.cleanup()
            await service.stop()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="schema-registry", daemon=True)
    thread.start()
    assert started.wait(60), "the schema registry did not start"
    if "error" in state:
        raise state["error"]  # type: ignore[misc]
    yield f"http://127.0.0.1:{port}"
    state["loop"].call_soon_threadsafe(state["stopping"].set)  # type: ignore[attr-defined]
    thread.join(30)


@pytest.fixture
def client(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": f"headrace:{TEST_ADMIN_TOKEN}"})


@pytest.fixture
def subject() -> str:
    """A subject no other test uses."""
    return f"s-{uuid.uuid4().hex[:10]}-value"
