"""Transform under a sustained load (append, merge, named events): its RSS sampled for 10 minutes, end vs warm-up."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import BenchEnv, Figure, status_mib
from bench.sink import service_env, spawn
from headrace.catalog import Catalog
from headrace.events import event_headers, event_key
from headrace.kafka import Topics, ensure_topics
from headrace.platform.processes import free_port, wait_ready
from headrace.postgres import create_pool, migrate

NEEDS_POSTGRES = True
SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", 600))
WARM_UP_SECONDS = min(60.0, SECONDS / 5)
# Events per second into each storage: well under what the sink writes, so the figure is memory, not backlog.
RATES = {"append": 2000, "merge": 1000, "named": 500}
MERGE_KEYS = 20_000
SAMPLE_SECONDS = 5.0


def _slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time, in MiB per minute."""
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    return statistics.linear_regression(times, values).slope * 60


async def _load(bootstrap: str, topics: dict[str, str], seconds: float) -> dict[str, int]:
    """Send RATES events per second into each topic for `seconds`, paced by the clock; returns the rows each storage
    must end with: every event of the append storages, one per distinct key of the merge storage."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    by_kind = dict.fromkeys(RATES, 0)
    merge_keys: set[int] = set()
    try:
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            now_ms = int(time.time() * 1000)
            futures = []
            for kind, rate in RATES.items():
                for _ in range(rate // 10):
                    i = sent
                    value = {"n": i, "user": f"u-{i % 5000:06d}", "price": i * 0.25, "id": i % MERGE_KEYS}
                    futures.append(
                        await producer.send(
                            topics[kind],
                            orjson.dumps(value),
                            key=event_key(["id"], value) if kind == "merge" else None,
                            headers=event_headers(str(uuid.uuid4()) if kind == "named" else None, now_ms),
                        )
                    )
                    sent += 1
                    by_kind[kind] += 1
                    if kind == "merge":
                        merge_keys.add(i % MERGE_KEYS)
            await asyncio.gather(*futures)
            tick += 1
            # Paced by the clock, not by a sleep per batch: a slow tick is made up by the next ones.
            await asyncio.sleep(max(0.0, started + tick / 10 - time.monotonic()))
        return by_kind | {"merge_rows": len(merge_keys)}
    finally:
        await producer.stop()


async def _written(pool: asyncpg.Pool, topics: dict[str, str]) -> int:
    return int(
        await pool.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM headrace.stream_positions WHERE topic = ANY($1)",
            list(topics.values()),
        )
    )


async def run(env: BenchEnv) -> list[Figure]:
    pool = await create_pool(env.settings, max_size=2)
    prefix = f"soak{uuid.uuid4().hex[:6]}"
    names = Topics(prefix)
    topics = {kind: names.ingest(f"soak_{kind}") for kind in RATES}
    await migrate(pool)
    await ensure_topics(env.settings, [*topics.values(), names.dead_letter])
    catalog = Catalog(pool)
    for kind in RATES:
        await catalog.create(
            f"soak_{kind}",
            load_mode="merge" if kind == "merge" else "append",
            primary_key=["id"] if kind == "merge" else None,
        )
    port = free_port()
    worker = spawn(
        "transform", service_env(env, prefix) | {"HEADRACE_TRANSFORM_PORT": str(port)}, env.work_dir / "soak.log"
    )
    samples: list[tuple[float, float]] = []
    lags: list[int] = []
    try:
        await wait_ready(f"http://127.0.0.1:{port}", worker)
        load = asyncio.ensure_future(_load(env.settings.require_kafka_bootstrap(), topics, SECONDS))
        started = time.monotonic()
        while not load.done():
            await asyncio.wait([load], timeout=SAMPLE_SECONDS)
            samples.append((time.monotonic() - started, status_mib(worker.pid, "VmRSS")))
            lags.append(int(sum(RATES.values()) * min(samples[-1][0], SECONDS)) - await _written(pool, topics))
        by_kind = await load
        sent = sum(by_kind[kind] for kind in RATES)
        deadline = time.monotonic() + 120
        while await _written(pool, topics) < sent and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # the last events' write: polling Postgres is the measurement
        written = await _written(pool, topics)
        rows = {kind: await pool.fetchval(f'SELECT count(*) FROM storage."soak_{kind}"') for kind in RATES}
        expected = by_kind | {"merge": by_kind["merge_rows"]}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await pool.close()
    warm = [rss for t, rss in samples if WARM_UP_SECONDS / 2 <= t <= WARM_UP_SECONDS]
    tail = [rss for t, rss in samples if t >= SECONDS - WARM_UP_SECONDS / 2]
    after_warm_up = [(t, rss) for t, rss in samples if t >= WARM_UP_SECONDS]
    return [
        Figure(
            f"worker RSS, last {WARM_UP_SECONDS / 2:g} s vs after warm-up", max(tail), "MiB", statistics.median(warm)
        ),
        Figure("worker RSS growth after warm-up (least squares)", _slope_per_minute(after_warm_up), "MiB/min"),
        Figure("worker peak RSS", max(rss for _, rss in samples), "MiB"),
        Figure("events sent", float(sent), "events"),
        Figure("events consumed (positions committed)", float(written), "events", float(sent)),
        *(Figure(f"rows in the {kind} storage", float(rows[kind]), "rows", float(expected[kind])) for kind in RATES),
        Figure("largest backlog sampled", float(max(lags)), "events"),
        Figure("load", float(SECONDS), "s"),
    ]
