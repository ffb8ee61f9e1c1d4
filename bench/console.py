"""Console pages with 100 storages and 50 flows: each page's latency, vs the JSON API calls it is built from."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.harness import BenchEnv, Figure, service_environ
from headrace.platform.processes import admin_headers, free_port
from headrace.settings import SERVICES

NEEDS_POSTGRES = True
STORAGES = int(os.environ.get("BENCH_CONSOLE_STORAGES", 100))
FLOWS = int(os.environ.get("BENCH_CONSOLE_FLOWS", 50))
ROUNDS = int(os.environ.get("BENCH_CONSOLE_ROUNDS", 30))
READY_TIMEOUT = 120.0

FLOW = """
name: {name}
schedule: {{cron: "0 6 * * *"}}
steps:
  - name: by_shop
    input: {src}
    stages:
      - compute: {{twice: "amount * 2"}}
      - aggregate: {{group_by: [shop], measures: {{total: {{sum: twice}}}}}}
    output: {name}_by_shop
"""


async def start_platform(env: BenchEnv) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """`headrace up` on this run's broker and database, every service on a free port."""
    variables = {s: f"HEADRACE_{s.replace('-', '_').upper()}_PORT" for s in SERVICES}
    ports = {variable: str(free_port()) for variable in variables.values()}
    environ = service_environ(env.settings, HEADRACE_DATA_DIR=str(env.work_dir / "platform"), **ports)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headrace", "up", env=environ, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(READY_TIMEOUT):
        async for line in process.stdout:
            if line.startswith(b"Headrace is ready"):
                break
            if line.startswith(b"Headrace failed"):
                raise RuntimeError(line.decode())
    # The rest of its output is not read: nothing more that matters, and a full pipe must not block it.
    asyncio.get_running_loop().create_task(_drain(process))
    urls = {s: f"http://127.0.0.1:{ports[variable]}" for s, variable in variables.items()}
    return process, urls


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.read(65536):
        pass


async def fill(http: aiohttp.ClientSession, urls: dict[str, str]) -> None:
    """50 storages with 20 rows each, 50 flows (one per source, each writing one more storage: 100 storages in all),
    and one run of each flow."""
    ingest, transform = urls["ingest"], urls["transform"]
    sources = []
    for i in range(STORAGES - FLOWS):
        async with http.post(f"{ingest}/api/storages", json={"name": f"s{i:03d}"}) as response:
            created = await response.json()
        body = [{"shop": f"shop{j % 4}", "amount": j, "i": i} for j in range(20)]
        async with http.post(created["push_url"], json=body) as response:
            assert response.status == 200, await response.text()
        sources.append(f"s{i:03d}")
    for name in sources:  # wait until transform wrote them all: a flow needs its input's model
        while True:
            async with http.get(f"{ingest}/api/storages/{name}") as response:
                if (await response.json())["columns"]:
                    break
            await asyncio.sleep(0.2)
    for i in range(FLOWS):
        text = FLOW.format(name=f"f{i:02d}", src=sources[i % len(sources)])
        async with http.post(
            f"{transform}/api/flows", data=text, headers={"Content-Type": "application/yaml"}
        ) as response:
            assert response.status in (200, 201), await response.text()
        async with http.post(f"{transform}/api/flows/f{i:02d}/runs?wait=true", json={}) as response:
            assert response.status == 200, await response.text()


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    """The median of ROUNDS calls, in milliseconds, after two to warm up."""
    for _ in range(2):
        await work()
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await work()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Callable[[], Awaitable[object]]:
    async def call() -> object:
        async with http.get(url, **kwargs) as response:
            assert response.status == 200, f"{url}: {response.status}"
            return await response.read()

    return call


def post(http: aiohttp.ClientSession, url: str, body: Any) -> Callable[[], Awaitable[object]]:
    async def call() -> object:
        async with http.post(url, json=body) as response:
            assert response.status == 200, f"{url}: {response.status}"
            return await response.read()

    return call


def together(*calls: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
    """The API calls of one page, at once, as the console makes them."""

    async def call() -> object:
        return await asyncio.gather(*(c() for c in calls))

    return call


def baselines(api: aiohttp.ClientSession, u: dict[str, str]) -> dict[str, Callable[[], Awaitable[object]]]:
    """Per page, the JSON API calls its data comes from."""
    i, t, e = u["ingest"], u["transform"], u["exporter"]
    s, f = "s000", "f00"
    services = [name for name in SERVICES if name != "console"]
    health = [get(api, f"{u[name]}{path}") for name in services for path in ("/healthz", "/readyz")]
    return {
        "overview": together(
            *health, get(api, f"{i}/metrics"), get(api, f"{t}/metrics"), get(api, f"{i}/api/storages?stats=true"),
            get(api, f"{e}/api/exports"), get(api, f"{t}/api/flows"),
        ),
        "storages": get(api, f"{i}/api/storages?stats=true"),
        "storage": together(
            get(api, f"{i}/api/storages/{s}"), get(api, f"{i}/api/storages/{s}/history"),
            post(api, f"{i}/api/storages/{s}/query", {"order_by": [["_inserted_at", "desc"]], "limit": 20}),
            post(api, f"{i}/api/storages/{s}/query", {"aggregates": {"n": ["count", "*"]}}),
            get(api, f"{i}/api/storages/{s}/rejected"),
        ),
        "flows": get(api, f"{t}/api/flows"),
        "flow": together(
            get(api, f"{t}/api/flows/{f}"), get(api, f"{t}/api/flows/{f}/graph"), get(api, f"{t}/api/flows/{f}/runs")
        ),
        "flow, a step selected": together(
            get(api, f"{t}/api/flows/{f}"), get(api, f"{t}/api/flows/{f}/graph"), get(api, f"{t}/api/flows/{f}/runs"),
            post(api, f"{t}/api/flows/{f}/plan", {}),
        ),
        "exports": get(api, f"{e}/api/exports"),
        "collectors": get(api, f"{i}/api/collectors"),
    }  # fmt: skip


PAGES = {
    "overview": "/",
    "storages": "/storages",
    "storage": "/storages/s000",
    "flows": "/flows",
    "flow": "/flows/f00",
    "flow, a step selected": "/flows/f00?node=step%3Aby_shop",
    "exports": "/exports",
    "collectors": "/collectors",
}


async def run(env: BenchEnv) -> list[Figure]:
    platform, urls = await start_platform(env)
    try:
        token = env.settings.require_admin_token()
        async with aiohttp.ClientSession(headers=admin_headers(token)) as api:
            await fill(api, urls)
            base = baselines(api, urls)
            console = urls["console"]
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                async with browser.post(f"{console}/login", data={"token": token}) as response:
                    assert response.status == 200, "login refused"
                figures = []
                for page, path in PAGES.items():
                    value = await timed(get(browser, console + path))
                    figures.append(Figure(f"{page} page (median)", value, "ms", await timed(base[page])))
        return figures
    finally:
        await stop(platform)


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, as Ctrl-C would: `headrace up` stops its services in order; killed if it takes over a minute."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()
