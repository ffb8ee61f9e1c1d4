"""Transform sink: rows/s into Postgres (append, merge) vs raw asyncpg COPY and quixstreams; push->row latency."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import BenchEnv, Figure, service_environ
from headrace.catalog import Catalog, Storage
from headrace.events import event_headers, event_key
from headrace.kafka import Topics, ensure_topics
from headrace.platform.processes import free_port, wait_ready
from headrace.postgres import create_pool, migrate

NEEDS_POSTGRES = True
ROWS = 100_000
MERGE_KEYS = ROWS // 2
LATENCY_SAMPLES = 100
REPO = Path(__file__).resolve().parent.parent


def record(i: int) -> dict:
    return {
        "event": "page_view",
        "user": f"u-{i % 5000:06d}",
        "hit_time_utc": "2021-04-08T10:58:14Z",
        "n": i,
        "price": i * 0.5,
        "id": i % MERGE_KEYS,
    }


async def produce(bootstrap: str, topic: str, count: int, keyed: bool, named: bool = False) -> None:
    """Events as ingest sends pushes: named (an `_id` or Idempotency-Key, so deduplicated) or not (no id header)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = []
        now_ms = int(time.time() * 1000)
        for i in range(count):
            value = record(i)
            futures.append(
                await producer.send(
                    topic,
                    orjson.dumps(value),
                    key=event_key(["id"], value) if keyed else None,
                    headers=event_headers(str(uuid.uuid4()) if named else None, now_ms),
                    partition=None if keyed else i % 4,
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def service_env(env: BenchEnv, prefix: str) -> dict[str, str]:
    return service_environ(env.settings, HEADRACE_TOPIC_PREFIX=prefix)


def spawn_command(command: list[str], environ: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=environ, cwd=REPO, stdout=out, stderr=out)


def spawn(module: str, environ: dict[str, str], log: Path) -> subprocess.Popen:
    return spawn_command([sys.executable, "-m", module], environ, log)


async def timed_fill(count_now, total: int, timeout: float = 300) -> float:
    """Rows per second from the first rows visible to all `total`, polling count_now()."""
    deadline = time.monotonic() + timeout
    first_at, first_count = None, 0
    while time.monotonic() < deadline:
        done = int(await count_now())
        now = time.perf_counter()
        if done and first_at is None:
            first_at, first_count = now, done
        if done >= total:
            assert first_at is not None
            return (total - first_count) / max(now - first_at, 1e-6)
        await asyncio.sleep(0.02)
    raise TimeoutError(f"only {await count_now()} of {total} rows after {timeout}s")


async def raw_copy_rate(pool: asyncpg.Pool, source: Storage) -> float:
    """Raw asyncpg COPY of exactly the rows the sink wrote, into a table of the same layout."""
    rows = [tuple(r) for r in await pool.fetch(f"SELECT * FROM {source.qualified_table}")]
    first = await pool.fetchrow(f"SELECT * FROM {source.qualified_table} LIMIT 1")
    assert first is not None, "the sink wrote no row"
    columns = list(first.keys())
    target = f"raw_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE TABLE public.{target} (LIKE {source.qualified_table})")
    best = 0.0
    for _ in range(3):
        await pool.execute(f"TRUNCATE public.{target}")
        started = time.perf_counter()
        await pool.copy_records_to_table(target, schema_name="public", columns=columns, records=rows)
        best = max(best, len(rows) / (time.perf_counter() - started))
    return best


async def sink_rate(
    env: BenchEnv, pool: asyncpg.Pool, prefix: str, load_mode: str, named: bool = False, fast_path: bool = True
) -> tuple[float, Storage, Path]:
    topics = Topics(prefix)
    name = f"bench_{load_mode}{'_named' if named else ''}{'' if fast_path else '_rowpath'}"
    await ensure_topics(env.settings, [topics.ingest(name), topics.dead_letter])
    storage, _ = await Catalog(pool).create(
        name, load_mode=load_mode, primary_key=["id"] if load_mode == "merge" else None
    )
    await produce(
        env.settings.require_kafka_bootstrap(), topics.ingest(name), ROWS, keyed=load_mode == "merge", named=named
    )
    log = env.work_dir / f"transform-{name}.log"
    environ = service_env(env, prefix) | {
        "HEADRACE_TRANSFORM_PORT": str(free_port()),
        "HEADRACE_TRANSFORM_FAST_PATH": str(fast_path).lower(),
    }
    worker = spawn("transform", environ, log)
    try:

        async def done() -> int:
            return await pool.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM headrace.stream_positions WHERE topic = $1",
                topics.ingest(name),
            )

        rate = await timed_fill(done, ROWS)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return rate, storage, log


async def latency(env: BenchEnv, pool: asyncpg.Pool, prefix: str) -> tuple[float, float]:
    """Seconds from sending an HTTP push to ingest until its row is visible in Postgres (p50, p95)."""
    name = "bench_latency"
    ports = {"ingest": free_port(), "transform": free_port()}
    environ = service_env(env, prefix) | {
        "HEADRACE_INGEST_PORT": str(ports["ingest"]),
        "HEADRACE_TRANSFORM_PORT": str(ports["transform"]),
    }
    topics = Topics(prefix)
    await ensure_topics(env.settings, [topics.ingest(name), topics.dead_letter])
    storage, token = await Catalog(pool).create(name)
    ingest = spawn("ingest", environ, env.work_dir / "ingest.log")
    transform = spawn("transform", environ, env.work_dir / "transform-latency.log")
    try:
        await wait_ready(f"http://127.0.0.1:{ports['ingest']}", ingest)
        await wait_ready(f"http://127.0.0.1:{ports['transform']}", transform)
        url = storage.push_url(f"http://127.0.0.1:{ports['ingest']}", token)
        samples = []
        async with aiohttp.ClientSession() as session:
            for i in range(LATENCY_SAMPLES + 5):
                started = time.perf_counter()
                async with session.post(
                    url, data=orjson.dumps({"probe": i}), headers={"Content-Type": "application/json"}
                ) as response:
                    assert response.status == 200, await response.text()
                while await pool.fetchval(f"SELECT count(*) FROM {storage.qualified_table}") < i + 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)  # polling is the measurement: nothing to wait on but Postgres itself
                if i >= 5:  # the first pushes pay for the group join and the model's first column
                    samples.append(time.perf_counter() - started)
        cuts = statistics.quantiles(samples, n=20)
        return statistics.median(samples), cuts[18]
    finally:
        for process in (ingest, transform):
            process.terminate()
            process.wait(timeout=30)


QUIX_SCRIPT = """
import sys
from urllib.parse import urlparse
from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink
bootstrap, url, topic, table = sys.argv[1:5]
db = urlparse(url)
app = Application(broker_address=bootstrap, consumer_group="bench-quix", auto_offset_reset="earliest",
                  commit_interval=0.5, loglevel="WARNING", use_changelog_topics=False)
sink = PostgreSQLSink(host=db.hostname, port=db.port or 5432, dbname=db.path.lstrip("/"),
                      user=db.username or "postgres", password=db.password or "", table_name=table)
sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
sdf.sink(sink)
app.run()
"""


async def quix_rate(env: BenchEnv, pool: asyncpg.Pool) -> float:
    """The same rows through quixstreams' PostgreSQLSink (its own consumer, INSERTs per checkpoint)."""
    topic = f"bench.quix.{uuid.uuid4().hex[:6]}"
    table = f"quix_{uuid.uuid4().hex[:6]}"
    await ensure_topics(env.settings, [topic])
    await produce(env.settings.require_kafka_bootstrap(), topic, ROWS, keyed=False)
    db = urlparse(env.settings.require_database_url())
    assert db.hostname
    log = env.work_dir / "quix.log"
    args = [env.settings.require_kafka_bootstrap(), env.settings.require_database_url(), topic, table]
    process = spawn_command([sys.executable, "-c", QUIX_SCRIPT, *args], dict(os.environ), log)
    try:

        async def done() -> int:
            if process.poll() is not None:
                raise RuntimeError(f"quixstreams exited with {process.returncode}: {log.read_text()[-2000:]}")
            exists = await pool.fetchval("SELECT to_regclass($1)", f"public.{table}")
            return await pool.fetchval(f'SELECT count(*) FROM public."{table}"') if exists else 0

        return await timed_fill(done, ROWS)
    finally:
        process.terminate()
        process.wait(timeout=30)


async def run(env: BenchEnv) -> list[Figure]:
    pool = await create_pool(env.settings, max_size=4)
    try:
        await migrate(pool)
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        append_rate, append_storage, _ = await sink_rate(env, pool, prefix, "append")
        named_rate, _, _ = await sink_rate(env, pool, prefix, "append", named=True)
        merge_rate, _, _ = await sink_rate(env, pool, prefix, "merge")
        # The same loads with every poll on the row path: what the column-wise fast path gains, in this run.
        append_rows_rate, _, _ = await sink_rate(env, pool, prefix, "append", fast_path=False)
        merge_rows_rate, _, _ = await sink_rate(env, pool, prefix, "merge", fast_path=False)
        copy_append = await raw_copy_rate(pool, append_storage)
        figures = [
            Figure("transform append into Postgres", append_rate, "rows/s", copy_append),
            Figure("transform append, named events (deduplicated)", named_rate, "rows/s", copy_append),
            Figure("transform merge into Postgres", merge_rate, "rows/s", copy_append),
            Figure("transform append, fast path off (row path)", append_rows_rate, "rows/s", copy_append),
            Figure("transform merge, fast path off (row path)", merge_rows_rate, "rows/s", copy_append),
            Figure("raw asyncpg COPY of the same rows", copy_append, "rows/s"),
        ]
        try:
            quix = await quix_rate(env, pool)
            figures.append(Figure("quixstreams PostgreSQLSink (baseline)", quix, "rows/s"))
            figures.append(Figure("transform append vs quixstreams", append_rate, "rows/s", quix))
        except Exception as exc:  # reported, so a missing optional package does not hide the other figures
            print(f"quixstreams PostgreSQLSink could not run: {exc}", file=sys.stderr)
        p50, p95 = await latency(env, pool, prefix)
        figures.append(Figure("push -> row visible, p50", p50 * 1000, "ms"))
        figures.append(Figure("push -> row visible, p95", p95 * 1000, "ms"))
        return figures
    finally:
        await pool.close()
