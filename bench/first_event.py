"""The first event pushed to a brand-new storage: seconds until its row is visible, with one and with two workers."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import aiohttp
import asyncpg

from bench.harness import BenchEnv, Figure
from bench.sink import service_env, spawn
from headrace.platform.processes import free_port, wait_ready
from headrace.postgres import create_pool, migrate

NEEDS_POSTGRES = True
STORAGES = int(os.environ.get("BENCH_FIRST_EVENT_STORAGES", 8))
SESSION_TIMEOUT_MS = os.environ.get("BENCH_SESSION_TIMEOUT_MS", "")
FETCH_WAIT_MS = os.environ.get("BENCH_FETCH_WAIT_MS", "")


async def _visible(pool: asyncpg.Pool, name: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        table = await pool.fetchval("SELECT table_name FROM headrace.storages WHERE name = $1", name)
        if table and await pool.fetchval(f'SELECT count(*) FROM storage."{table}"'):
            return
        await asyncio.sleep(0.01)  # polling is the measurement: nothing to wait on but Postgres itself
    raise TimeoutError(f"the first event of {name} was not written")


async def _first_event(session: aiohttp.ClientSession, ingest: str, pool: asyncpg.Pool, name: str) -> tuple[float, str]:
    """Create the storage over the API, push one event, and time from the push until its row is visible."""
    async with session.post(f"{ingest}/api/storages", json={"name": name}) as response:
        created = await response.json()
        assert response.status == 201, created
    push_url = f"{ingest}/api/{created['push_url'].rsplit('/api/', 1)[1]}"
    started = time.perf_counter()
    async with session.post(push_url, json={"probe": 1}) as response:
        assert response.status == 200, await response.text()
    await _visible(pool, name, time.monotonic() + 60)
    return time.perf_counter() - started, push_url


async def _measure(env: BenchEnv, pool: asyncpg.Pool, workers: int) -> tuple[list[float], float]:
    """First-event latencies of STORAGES new storages, and the push->row latency of an existing one (the baseline)."""
    prefix = f"first{uuid.uuid4().hex[:6]}"
    ingest_port = free_port()
    environ = service_env(env, prefix) | {"HEADRACE_INGEST_PORT": str(ingest_port)}
    if SESSION_TIMEOUT_MS:  # how the group's join time follows the session timeout on this broker
        environ["HEADRACE_KAFKA_SESSION_TIMEOUT_MS"] = SESSION_TIMEOUT_MS
    if FETCH_WAIT_MS:  # and the wait of a fetch already in flight (50 ms by default)
        environ["HEADRACE_KAFKA_FETCH_MAX_WAIT_MS"] = FETCH_WAIT_MS
    ingest_url = f"http://127.0.0.1:{ingest_port}"
    processes = [spawn("ingest", environ, env.work_dir / f"ingest-{workers}.log")]
    ports = [free_port() for _ in range(workers)]
    for index, port in enumerate(ports):
        log = env.work_dir / f"transform-{workers}-{index}.log"
        processes.append(spawn("transform", environ | {"HEADRACE_TRANSFORM_PORT": str(port)}, log))
    headers = {"Authorization": f"Bearer {env.settings.require_admin_token()}"}
    try:
        await wait_ready(ingest_url, processes[0], 90)
        for port, process in zip(ports, processes[1:], strict=True):
            await wait_ready(f"http://127.0.0.1:{port}", process, 90)
        async with aiohttp.ClientSession(headers=headers) as session:
            # The group forms on a first storage (and its first event), as on a platform already in use.
            await _first_event(session, ingest_url, pool, f"{prefix}_warm")
            results = [await _first_event(session, ingest_url, pool, f"{prefix}_{i}") for i in range(STORAGES)]
            firsts = [seconds for seconds, _ in results]
            existing = []
            table = await pool.fetchval("SELECT table_name FROM headrace.storages WHERE name = $1", f"{prefix}_0")
            for n in range(10):
                started = time.perf_counter()
                async with session.post(results[0][1], json={"n": n}) as r:
                    assert r.status == 200, await r.text()
                while await pool.fetchval(f'SELECT count(*) FROM storage."{table}"') < n + 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
                existing.append(time.perf_counter() - started)
        return firsts, statistics.median(existing)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


async def run(env: BenchEnv) -> list[Figure]:
    pool = await create_pool(env.settings, max_size=2)
    await migrate(pool)
    figures = []
    try:
        for workers in (1, 2):
            firsts, existing = await _measure(env, pool, workers)
            label = "one worker" if workers == 1 else "two workers"
            figures += [
                Figure(f"first event of a new storage, {label}, p50", statistics.median(firsts) * 1000, "ms", 1000),
                Figure(f"first event of a new storage, {label}, max", max(firsts) * 1000, "ms", 1000),
                Figure(f"push -> row of an existing storage, {label}, p50", existing * 1000, "ms"),
            ]
    finally:
        await pool.close()
    return figures
