"""Ingest over HTTP: batched events/s vs raw aiokafka, single-event req/s and latency on 64 connections, peak RSS."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import aiohttp
import orjson

from bench.harness import BenchEnv, Figure, service_environ
from bench.kafka_baseline import produce
from headrace.catalog import Catalog
from headrace.catalog.provision import create_storage
from headrace.kafka import ensure_topics
from headrace.platform.processes import free_port, wait_ready
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


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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

        # (b) single-event pushes over 64 connections from a separate process.
        loader = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LOAD_GENERATOR,
            push_url,
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

        # (c) the ingest process's peak memory over the whole run.
        peak_mib = _peak_rss_mib(ingest.pid)
    finally:
        ingest.terminate()
        await ingest.wait()
    return [
        Figure("ingest batched (1,000 events/request)", events / batched_s, "events/s", events / raw_s),
        Figure("ingest single-event, 64 connections", len(latencies) / single["elapsed"], "req/s", 5000),
        Figure("ingest single-event answered 200", ok / max(1, len(latencies)) * 100, "%"),
        Figure("ingest single-event p50 latency", _percentile(latencies, 0.50) * 1000, "ms"),
        Figure("ingest single-event p99 latency", _percentile(latencies, 0.99) * 1000, "ms", 50),
        Figure("ingest process peak RSS", peak_mib, "MiB"),
    ]
