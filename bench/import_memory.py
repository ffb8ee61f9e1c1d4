"""`storage import` of a large CSV from SFTP: ingest's peak RSS for a 1 GB file vs a 100 MB one, and the rate."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import aiohttp

from bench.harness import BenchEnv, Figure, status_mib
from bench.sink import service_env, spawn
from headrace.platform.processes import free_port, wait_ready
from headrace.platform.scratch import ScratchSftp, running_sftp

NEEDS_POSTGRES = True
SMALL_MB = int(os.environ.get("BENCH_IMPORT_SMALL_MB", 100))
LARGE_MB = int(os.environ.get("BENCH_IMPORT_LARGE_MB", 1000))
HEADER = b"id,customer,amount,created_at,paid,note\n"


def write_csv(path: Path, megabytes: int) -> int:
    """A CSV of about `megabytes` MB, written in blocks; returns its rows."""
    target = megabytes * 1_000_000
    rows = written = 0
    with path.open("wb") as out:
        out.write(HEADER)
        while written < target:
            block = b"".join(
                b"%d,customer-%d,%d.25,2024-01-%02dT10:58:%02dZ,%s,some text of the row\n"
                % (i, i % 5000, i % 1000, 1 + i % 28, i % 60, b"true" if i % 2 else b"false")
                for i in range(rows, rows + 10_000)
            )
            out.write(block)
            rows += 10_000
            written += len(block)
    return rows


async def import_once(env: BenchEnv, server: ScratchSftp, path: Path) -> tuple[float, float, int]:
    """One import in an ingest process of its own: (peak RSS in MiB, seconds, rows)."""
    port = free_port()
    environ = service_env(env, f"imp{uuid.uuid4().hex[:6]}") | {
        "HEADRACE_INGEST_PORT": str(port),
        "HEADRACE_COLLECTOR_SCHEDULER": "false",
    }
    ingest = spawn("ingest", environ, env.work_dir / f"ingest-{path.stem}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, ingest, 90)
        source = {
            "kind": "sftp",
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "private_key": server.client_key,
            "host_key": server.host_public_key,
            "pattern": str(path),
        }
        headers = {"Authorization": f"Bearer {env.settings.require_admin_token()}"}
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            started = time.perf_counter()
            async with session.post(
                f"{url}/api/storages/bench_{path.stem}/imports?wait=true", json={"source": source}
            ) as response:
                answer = await response.json()
                assert response.status == 200, answer
            seconds = time.perf_counter() - started
        return status_mib(ingest.pid, "VmHWM"), seconds, int(answer["rows"])
    finally:
        ingest.terminate()
        ingest.wait(timeout=60)


async def run(env: BenchEnv) -> list[Figure]:
    # The scratch server starts and stops with asyncio.run of its own: entered and left off this loop's thread.
    context = running_sftp(env.work_dir)
    server = await asyncio.to_thread(context.__enter__)
    try:
        small, large = server.root / "small.csv", server.root / "large.csv"
        await asyncio.to_thread(write_csv, small, SMALL_MB)
        await asyncio.to_thread(write_csv, large, LARGE_MB)
        small_peak, small_s, small_rows = await import_once(env, server, small)
        large_peak, large_s, large_rows = await import_once(env, server, large)
        small_bytes, large_bytes = small.stat().st_size, large.stat().st_size
    finally:
        await asyncio.to_thread(context.__exit__, None, None, None)
    return [
        Figure(f"ingest peak RSS, {LARGE_MB} MB import vs {SMALL_MB} MB", large_peak, "MiB", small_peak),
        Figure(f"import rate, {LARGE_MB} MB", large_bytes / large_s / 1e6, "MB/s"),
        Figure(f"import rate, {SMALL_MB} MB", small_bytes / small_s / 1e6, "MB/s"),
        Figure(f"rows imported, {LARGE_MB} MB", float(large_rows), "rows"),
        Figure(f"rows imported, {SMALL_MB} MB", float(small_rows), "rows"),
    ]
