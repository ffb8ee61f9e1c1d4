"""Collector: a 1M-row Postgres table snapshotted into a storage, vs a raw COPY TO STDOUT / COPY FROM STDIN pipe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import asyncpg
import psutil

from bench.harness import BenchEnv, Figure
from bench.sink import REPO, service_env, spawn
from headrace.platform.processes import free_port, wait_ready
from headrace.postgres import create_pool, migrate

NEEDS_POSTGRES = True
ROWS = int(os.environ.get("BENCH_COLLECTOR_ROWS", 1_000_000))
PREFIX = "benchcollect"


async def raw_copy_rate(database_url: str) -> float:
    """Rows/s of COPY (SELECT * FROM the source) TO STDOUT piped into COPY … FROM STDIN on another connection."""
    reader, writer = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        await writer.execute("DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy (LIKE bench_source)")
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

        async def into_queue(data: bytes) -> None:
            await chunks.put(data)

        async def from_queue():
            while (chunk := await chunks.get()) is not None:
                yield chunk

        async def read() -> None:
            await reader.copy_from_query("SELECT * FROM bench_source", output=into_queue)
            await chunks.put(None)

        started = time.perf_counter()
        await asyncio.gather(read(), writer.copy_to_table("bench_copy", source=from_queue()))
        return ROWS / (time.perf_counter() - started)
    finally:
        await reader.close()
        await writer.close()


def run_watched(command: list[str], environ: dict[str, str], pid: int) -> float:
    """Run a command, polling the resident memory of process `pid` until it exits: that peak in MiB."""
    process = subprocess.Popen(command, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(pid)
    peak = 0
    while process.poll() is None:
        peak = max(peak, watched.memory_info().rss)
        time.sleep(0.05)
    assert process.stderr is not None
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command[2:4])} failed: {process.stderr.read().decode()}")
    return peak / 1024 / 1024


async def run(env: BenchEnv) -> list[Figure]:
    database_url = env.settings.require_database_url()
    pool = await create_pool(env.settings, max_size=2)
    await migrate(pool)
    await pool.execute(
        "CREATE TABLE bench_source AS SELECT i AS id, 'customer-' || (i % 5000) AS customer, i * 0.25 AS amount,"
        " timestamptz '2024-01-01' + i * interval '1 second' AS created_at, i % 2 = 0 AS paid"
        f" FROM generate_series(1, {ROWS}) AS i"
    )
    baseline = await raw_copy_rate(database_url)

    # The collector runs in an ingest service of its own (a job), which the CLI asks over HTTP.
    port = free_port()
    environ = service_env(env, PREFIX) | {
        "HEADRACE_INGEST_PORT": str(port),
        "HEADRACE_INGEST_URL": f"http://127.0.0.1:{port}",
        "HEADRACE_COLLECTOR_SCHEDULER": "false",
    }
    ingest = spawn("ingest", environ, env.work_dir / "ingest.log")
    await wait_ready(environ["HEADRACE_INGEST_URL"], ingest, 90)
    cli = [sys.executable, "-m", "headrace"]
    await asyncio.to_thread(
        subprocess.run,
        [
            *cli,
            "collector",
            "create",
            "bench",
            "--storage",
            "bench_snapshot",
            "--from",
            database_url,
            "--table",
            "bench_source",
            "--mode",
            "snapshot",
        ],
        env=environ,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    transform = spawn("transform", environ | {"HEADRACE_TRANSFORM_PORT": str(free_port())}, env.work_dir / "t.log")
    try:
        started = time.perf_counter()
        peak = await asyncio.to_thread(run_watched, [*cli, "collector", "run", "bench"], environ, ingest.pid)
        produced = time.perf_counter() - started
        deadline = time.monotonic() + 1800
        while await pool.fetchval("SELECT count(*) FROM storage.bench_snapshot") < ROWS:
            if time.monotonic() > deadline:
                raise TimeoutError("the snapshot did not reach the storage")
            await asyncio.sleep(0.2)
        loaded = time.perf_counter() - started
    finally:
        for process in (transform, ingest):
            process.terminate()
            process.wait(timeout=30)
        await pool.close()
    return [
        Figure("snapshot into storage, end to end (rows/s)", ROWS / loaded, "rows/s", baseline),
        Figure("collector extract + produce (rows/s)", ROWS / produced, "rows/s", baseline),
        Figure("ingest peak memory while the collector runs", peak, "MiB"),
    ]
