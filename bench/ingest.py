"""Ingest over HTTP: batched events/s vs raw aiokafka, single-event req/s and latency on 64 connections vs a bare
aiohttp server under the same load, peak RSS."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.harness import BenchEnv, Figure, service_environ, status_mib
from bench.kafka_baseline import produce
from headrace.catalog import Catalog
from headrace.catalog.provision import create_storage
from headrace.kafka import ensure_topics
from headrace.platform.processes import free_port, wait_for_port, wait_ready
from headrace.postgres import create_pool

NEEDS_POSTGRES = True
BATCH_EVENTS = 1_000
BATCHES = 100
BATCH_CONCURRENCY = 4
SINGLE_CONNECTIONS = 64
SINGLE_REQUESTS = 30_000
SINGLE_SECONDS = 20.0
EVENT = {"event": "page_view", "user": "u-000123", "hit_time_utc": "2021-04-08T10:58:14Z", "n": 42}

# The load generator runs in its own process, so that the client's CPU is not the ingest process's.
LOAD_GENERATOR = r"""
import asyncio, sys, time, aiohttp, orjson
url, total, connections, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
body = orjson.dumps({"event": "page_view", "user": "u-000123", "hit_time_utc": "2021-04-08T10:58:14Z", "n": 42})
async def main():
    latencies, statuses, left = [], {}, [total]
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker():
            while left[0] > 0 and time.perf_counter() < deadline:
                left[0] -= 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        status = r.status
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - started)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    print(orjson.dumps({"elapsed": elapsed, "latencies": latencies, "statuses": statuses}).decode())
asyncio.run(main())
"""


# The baseline of the single-event figures: aiohttp on uvloop reading the body and answering 200 with a small JSON,
# under the same load generator in the same run (what the HTTP stack alone costs on this machine).
BARE_SERVER = r"""
import sys, uvloop
from aiohttp import web
async def accept(request):
    await request.read()
    return web.json_response({"accepted": 1})
app = web.Application()
app.router.add_post("/push", accept)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
WRK = shutil.which("wrk")
WRK_SCRIPT = (
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f"wrk.body = {orjson.dumps(orjson.dumps(EVENT).decode()).decode()}\n"
)
_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class Load:
    """What a load generator saw: requests per second, latency percentiles (s), and the share answered 200."""

    rate: float
    p50: float
    p99: float
    ok_share: float


async def _wrk(url: str, work_dir: Path) -> Load:
    """wrk (C, one thread, 64 connections): it leaves the cores to the server, where the Python generator cannot."""
    assert WRK is not None
    script = work_dir / "push.lua"
    script.write_text(WRK_SCRIPT)
    command = [WRK, "-t1", f"-c{SINGLE_CONNECTIONS}", f"-d{SINGLE_SECONDS:g}s", "--latency", "-s", str(script), url]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out = (await process.communicate())[0].decode()
    found = {m[0]: float(m[1]) * _WRK_UNITS[m[2]] for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    ok = requests - (int(failed[1]) if failed else 0) - errors
    return Load(float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), found["50"], found["99"], ok / requests)  # type: ignore[index]


async def _python_generator(url: str) -> Load:
    loader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOAD_GENERATOR,
        url,
        str(SINGLE_REQUESTS),
        str(SINGLE_CONNECTIONS),
        str(SINGLE_SECONDS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await loader.communicate()
    if loader.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err.decode()[-2000:]}")
    single = orjson.loads(out)
    latencies = single["latencies"]
    ok = single["statuses"].get("200", 0)
    return Load(
        len(latencies) / single["elapsed"],
        _percentile(latencies, 0.50),
        _percentile(latencies, 0.99),
        ok / max(1, len(latencies)),
    )


async def _single_events(url: str, work_dir: Path) -> Load:
    return await (_wrk(url, work_dir) if WRK else _python_generator(url))


async def _bare_server(work_dir: Path) -> Load:
    port = free_port()
    server = await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_SERVER, str(port))
    try:
        await wait_for_port("127.0.0.1", port, 30)
        return await _single_events(f"http://127.0.0.1:{port}/push", work_dir)
    finally:
        server.terminate()
        await server.wait()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _batched(push_url: str) -> float:
    body = orjson.dumps([EVENT] * BATCH_EVENTS)
    queue = list(range(BATCHES))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                queue.pop()
                async with session.post(push_url, data=body, headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 200, await r.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(BATCH_CONCURRENCY)))
        return time.perf_counter() - started


async def run(env: BenchEnv) -> list[Figure]:
    settings = env.settings.model_copy(update={"ingest_port": free_port(), "log_level": "WARNING"})
    environ = service_environ(settings, HEADRACE_INGEST_PORT=str(settings.ingest_port))
    url = settings.service_url("ingest")
    ingest = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", env=environ, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_ready(url, ingest)
        pool = await create_pool(settings, max_size=2)
        try:
            created = await create_storage(settings, Catalog(pool), f"bench_{uuid.uuid4().hex[:8]}")
        finally:
            await pool.close()
        push_url = created["push_url"].replace(settings.push_base_url, url)

        # (a) batches of 1,000 events against raw aiokafka producing the same events, in this run.
        await _batched(push_url)  # warm-up: connections, metadata, the storage cache
        batched_s = await _batched(push_url)
        raw_topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
        await ensure_topics(settings, [raw_topic])
        raw_s = await produce(
            settings.require_kafka_bootstrap(), raw_topic, BATCH_EVENTS * BATCHES, orjson.dumps(EVENT)
        )
        events = BATCH_EVENTS * BATCHES

        # (b) single-event pushes over 64 connections from another process (wrk if the machine has it), and a bare
        # aiohttp server under the same load.
        single = await _single_events(push_url, env.work_dir)
        bare = await _bare_server(env.work_dir)

        # (c) the ingest process's peak memory over the whole run.
        peak_mib = status_mib(ingest.pid, "VmHWM")
    finally:
        ingest.terminate()
        await ingest.wait()
    generator = "wrk" if WRK else "Python generator"
    return [
        Figure("ingest batched (1,000 events/request)", events / batched_s, "events/s", events / raw_s),
        Figure(f"ingest single-event, 64 connections ({generator})", single.rate, "req/s", bare.rate),
        Figure("ingest single-event answered 200", single.ok_share * 100, "%"),
        Figure("ingest single-event p50 latency", single.p50 * 1000, "ms", bare.p50 * 1000),
        Figure("ingest single-event p99 latency", single.p99 * 1000, "ms", bare.p99 * 1000),
        Figure("ingest single-event vs the 8,000 req/s goal", single.rate, "req/s", 8000),
        Figure("ingest single-event p99 vs the 30 ms goal", single.p99 * 1000, "ms", 30),
        Figure("ingest process peak RSS", peak_mib, "MiB"),
    ]
