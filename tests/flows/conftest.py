"""Flow test helpers: storages filled directly in Postgres, the flows part of transform in this process, HTTP calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from headrace.catalog import Catalog, StorageNotFound
from headrace.flows.definitions import parse_flow
from headrace.flows.validate import check_flow
from headrace.models.inference import convert
from headrace.postgres import quote_ident
from headrace.settings import Settings
from tests.conftest import ADMIN, RunningPlatform
from transform.flows.service import Flows


async def load_rows(pool: asyncpg.Pool, name: str, records: list[dict[str, Any]]) -> None:
    """Create the storage (if missing) and insert the records, its model inferred from them as any load's is."""
    catalog = Catalog(pool)
    try:
        storage = await catalog.get(name)
    except StorageNotFound:
        storage, _ = await catalog.create(name)
    async with pool.acquire() as conn, conn.transaction():
        model = await catalog.model(storage.id, conn)
        change, _ = model.plan(records)
        if change:
            storage = await catalog.get(name)
            model = await catalog.evolve(conn, storage, model, change)
            await conn.reload_schema_state()
        columns = [c for c in model.columns]
        names = ", ".join(["_event_id", *(quote_ident(c.name) for c in columns)])
        slots = ", ".join(f"${i + 1}" for i in range(len(columns) + 1))
        await conn.executemany(
            f"INSERT INTO {storage.qualified_table} ({names}) VALUES ({slots})",
            [[f"load:{i}", *(convert(r.get(c.key), c.type) for c in columns)] for i, r in enumerate(records)],
        )


async def rows_of(pool: asyncpg.Pool, name: str, *keys: str) -> list[tuple[Any, ...]]:
    """The storage's rows as sorted tuples of the given fields."""
    catalog = Catalog(pool)
    storage = await catalog.get(name)
    model = await catalog.model(storage.id)
    listed = ", ".join(quote_ident(model.by_key[k].name) for k in keys)
    rows = await pool.fetch(f"SELECT {listed} FROM {storage.qualified_table}")
    return sorted((tuple(r) for r in rows), key=lambda t: tuple((1, 0) if v is None else (0, v) for v in t))


@pytest.fixture
async def flows(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Flows]:
    """The flows part of transform in this process (no scheduler), on the session's database."""
    own = settings.model_copy(update={"flow_scheduler": False})
    started = await Flows.start(own)
    yield started
    await started.stop()


async def apply(flows: Flows, definition: dict[str, Any]) -> Any:
    flow = parse_flow(definition)
    await check_flow(flow, flows.catalog)
    stored, _ = await flows.store.apply(flow)
    return stored


async def run_now(
    flows: Flows, name: str, params: dict[str, Any] | None = None, rerun_of: Any = None
) -> dict[str, Any]:
    stored = await flows.store.get(name)
    run_id = await flows.runner.start(stored, "api", params or {}, rerun_of)
    await flows.runner.wait(run_id)
    return await flows.store.run(stored.id, run_id)


def last_attempts(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's last attempt in a run."""
    found: dict[str, dict[str, Any]] = {}
    for step in run["steps"]:
        found[step["step"]] = step
    return found


async def api(platform: RunningPlatform, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    base = platform.settings.service_url("transform")
    async with aiohttp.ClientSession(headers=ADMIN) as session, session.request(method, base + path, **kwargs) as r:
        return r.status, await r.json(content_type=None)
