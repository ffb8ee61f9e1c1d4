"""Chaos: about 100k events from concurrent clients while kill -9 hits ingest, a transform worker and the exporter.

Clients push single events, NDJSON batches, DataFrame loads and run a collector, into an append storage and a
merge storage with deletes, and retry any non-2xx answer (or none) with the same ids. Afterwards the append
storage holds each event exactly once, the merge storage equals the expected final state, and the files the
delivery reports list hold exactly the append storage's rows, each once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
import pandas as pd

from headrace.client import Client, HeadraceError
from headrace.platform.scratch import ScratchS3
from tests.chaos.conftest import Cluster
from tests.conftest import ADMIN, TEST_ADMIN_TOKEN, s3_client
from tests.eventually import eventually

SINGLE_PUSHES = 2_000
NDJSON_PUSHES, NDJSON_SIZE = 80, 1_000
DATAFRAMES, DATAFRAME_ROWS = 5, 2_000
COLLECTED, COLLECTOR_STEPS = 5_000, 10
MERGE_KEYS, MERGE_ROUNDS = 300, 10
VICTIMS = ("ingest", "transform-0", "transform-1", "exporter")
NOW = datetime.now(UTC).isoformat()


async def post_until_ok(session: aiohttp.ClientSession, url: str, deadline: float, **kwargs: Any) -> dict[str, Any]:
    """POST until a 2xx answer, with the same body and headers (so the same ids) every time."""

    async def attempt() -> dict[str, Any]:
        try:
            async with session.post(url, timeout=aiohttp.ClientTimeout(total=30), **kwargs) as response:
                if 200 <= response.status < 300:
                    answer: dict[str, Any] = await response.json()
                    return answer
                raise AssertionError(f"{response.status} {await response.text()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AssertionError(repr(exc)) from exc

    return await eventually(attempt, timeout=max(deadline - time.monotonic(), 0.0), what=f"a 2xx answer to POST {url}")


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def merge_round(r: int) -> list[dict[str, Any]]:
    """Round r touches two keys in three; every seventh touch is a delete."""
    records = []
    for k in range(MERGE_KEYS):
        if (k * 31 + r) % 3 == 0:
            continue
        records.append({"k": k, "_op": "d"} if (k + r) % 7 == 0 else {"k": k, "v": r, "hit_time_utc": NOW})
    return records


def merge_expected() -> dict[int, int]:
    state: dict[int, int] = {}
    for r in range(MERGE_ROUNDS):
        for record in merge_round(r):
            if record.get("_op") == "d":
                state.pop(record["k"], None)
            else:
                state[record["k"]] = record["v"]
    return state


async def monkey(cluster: Cluster, stop: asyncio.Event, every_victim_hit: asyncio.Event, rng: random.Random) -> None:
    """kill -9 a service every half second to second and a half, each of them in turn in a shuffled order, and
    start it again a moment later; `every_victim_hit` is set once each has been killed at least once."""
    while not stop.is_set():
        order = list(VICTIMS)
        rng.shuffle(order)
        for name in order:
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(0.5, 1.5))
                return
            except TimeoutError:
                pass
            victim = cluster[name]
            victim.kill()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            victim.start()
        every_victim_hit.set()


async def exporter_runs(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    """Runs asked for all along, failing or not: some are killed midway, and must leave no row twice."""
    while not stop.is_set():
        try:
            async with session.post(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        # One run a second at most, and none once the load is over.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def test_kill_9_anywhere_loses_nothing_and_writes_nothing_twice(
    cluster: Cluster, pool: asyncpg.Pool, database_url: str, s3_server: ScratchS3, bucket: str
) -> None:
    await cluster.start()
    ingest, exporter = cluster["ingest"].url, cluster["exporter"].url
    suffix = uuid.uuid4().hex[:8]
    appended, merged, source = f"chaos_a_{suffix}", f"chaos_m_{suffix}", f"chaos_src_{suffix}"
    deadline = time.monotonic() + 600
    rng = random.Random(suffix)
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        created = await post_until_ok(session, f"{ingest}/api/storages", deadline, json={"name": appended})
        merged_push_url = (
            await post_until_ok(
                session,
                f"{ingest}/api/storages",
                deadline,
                json={"name": merged, "primary_key": ["k"], "load_mode": "merge"},
            )
        )["push_url"]
        await pool.execute(f"CREATE TABLE {source} (id bigserial PRIMARY KEY, uid text, src text, hit_time_utc text)")
        await post_until_ok(
            session,
            f"{ingest}/api/collectors",
            deadline,
            json={
                "name": source,
                "storage": appended,
                "source": {"kind": "postgres", "dsn": database_url, "table": f"public.{source}"},
                "extract_mode": "incremental-appends",
                "cursor_column": "id",
                "every_seconds": 1,
            },
        )
        await post_until_ok(
            session,
            f"{exporter}/api/exports",
            deadline,
            json={
                "name": appended,
                "sources": [appended],
                "format": "ndjson",
                "scheduled": False,
                "destination": {
                    "kind": "s3",
                    "bucket": bucket,
                    "folder": "chaos",
                    "endpoint_url": s3_server.endpoint_url,
                    "region": s3_server.region,
                    "access_key_id": s3_server.access_key_id,
                    "secret_access_key": s3_server.secret_access_key,
                },
            },
        )
        push_url = created["push_url"]
        expected_uids: set[str] = set()

        async def single_pushes(worker: int) -> None:
            for i in range(worker, SINGLE_PUSHES, 8):
                record = {"_id": f"s{i}", "uid": f"s{i}", "src": "single", "hit_time_utc": NOW}
                await post_until_ok(session, push_url, deadline, json=record)

        async def ndjson_pushes(worker: int) -> None:
            for r in range(worker, NDJSON_PUSHES, 4):
                body = ndjson([{"uid": f"nd{r}:{j}", "src": "ndjson", "hit_time_utc": NOW} for j in range(NDJSON_SIZE)])
                headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": f"nd{r}"}
                await post_until_ok(session, push_url, deadline, data=body, headers=headers)

        def dataframe_load(k: int) -> None:
            frame = pd.DataFrame(
                {
                    "uid": [f"df{k}:{i}" for i in range(DATAFRAME_ROWS)],
                    "src": "dataframe",
                    "hit_time_utc": NOW,
                }
            )
            with Client(ingest, admin_token=TEST_ADMIN_TOKEN, retries=1000) as client:
                while True:
                    try:
                        client.storage(appended).load_dataframe(frame, batch_id=f"chaos-df{k}-{suffix}")
                        return
                    except HeadraceError as exc:
                        if time.monotonic() > deadline:
                            raise
                        assert exc.status == 0 or exc.status >= 500 or exc.status == 429, exc

        async def merge_rounds() -> None:
            for r in range(MERGE_ROUNDS):
                headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": f"m{r}"}
                await post_until_ok(session, merged_push_url, deadline, data=ndjson(merge_round(r)), headers=headers)

        async def source_rows() -> None:
            step = COLLECTED // COLLECTOR_STEPS
            for s in range(COLLECTOR_STEPS):
                await pool.executemany(
                    f"INSERT INTO {source} (uid, src, hit_time_utc) VALUES ($1, 'collector', $2)",
                    [(f"c{s * step + i}", NOW) for i in range(step)],
                )
                await asyncio.sleep(0.5)

        expected_uids |= {f"s{i}" for i in range(SINGLE_PUSHES)}
        expected_uids |= {f"nd{r}:{j}" for r in range(NDJSON_PUSHES) for j in range(NDJSON_SIZE)}
        expected_uids |= {f"df{k}:{i}" for k in range(DATAFRAMES) for i in range(DATAFRAME_ROWS)}
        expected_uids |= {f"c{i}" for i in range(COLLECTED)}

        stop, every_victim_hit = asyncio.Event(), asyncio.Event()
        chaos = asyncio.create_task(monkey(cluster, stop, every_victim_hit, rng))
        runs = asyncio.create_task(exporter_runs(session, f"{exporter}/api/exports/{appended}/runs?wait=true", stop))
        clients: list[Awaitable[Any]] = [single_pushes(w) for w in range(8)]
        clients += [ndjson_pushes(w) for w in range(4)]
        clients += [asyncio.to_thread(dataframe_load, k) for k in range(DATAFRAMES)]
        # The load is not over before every service has been killed at least once.
        clients += [merge_rounds(), source_rows(), every_victim_hit.wait()]
        try:
            await asyncio.gather(*clients)
        finally:
            stop.set()
            await asyncio.gather(chaos, runs)
        assert all(cluster[name].kills > 0 for name in VICTIMS)

        # Everyone up again; then everything acknowledged must arrive, once.
        for service in cluster.services.values():
            if service.process is None or service.process.poll() is not None:
                service.start()
        for service in cluster.services.values():
            await service.ready()
        table = f'storage."{appended}"'

        async def all_stored() -> bool:
            try:
                return await pool.fetchval(f"SELECT count(DISTINCT uid) FROM {table}") == len(expected_uids)
            except asyncpg.UndefinedColumnError:  # nothing written yet: the column comes with the first row
                return False

        await eventually(all_stored, timeout=deadline - time.monotonic(), what="every event stored")
        counts = await pool.fetchrow(
            f"SELECT count(*) AS n, count(DISTINCT _event_id) AS ids, count(DISTINCT uid) AS uids FROM {table}"
        )
        assert dict(counts) == {"n": len(expected_uids), "ids": len(expected_uids), "uids": len(expected_uids)}
        stored = {r["uid"] for r in await pool.fetch(f"SELECT uid FROM {table}")}
        assert stored == expected_uids

        expected_merge = merge_expected()

        async def merged_as_expected() -> bool:
            try:
                rows = await pool.fetch(f'SELECT k, v FROM storage."{merged}"')
            except asyncpg.UndefinedColumnError:
                return False
            return {r["k"]: r["v"] for r in rows} == expected_merge

        await eventually(
            merged_as_expected, timeout=deadline - time.monotonic(), what="the merge storage's final state"
        )

        # A last run after everything is stored, until one finds nothing new: every row has gone out.
        for _ in range(30):
            answer = await post_until_ok(session, f"{exporter}/api/exports/{appended}/runs?wait=true", deadline)
            if answer["status"] == "empty":
                break
        else:
            raise AssertionError("export runs kept finding rows")
        exported = await _reported_uids(s3_server, bucket)
        duplicates = [uid for uid, n in Counter(exported).items() if n > 1]
        assert not duplicates, f"{len(duplicates)} rows in two reported files, e.g. {duplicates[:5]}"
        assert set(exported) == expected_uids


async def _reported_uids(s3_server: ScratchS3, bucket: str) -> list[str]:
    """The uid of every row in every file a delivery report lists."""
    async with s3_client(s3_server) as s3:
        keys: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix="chaos/"):
            keys += [item["Key"] for item in page.get("Contents", [])]
        listed: list[str] = []
        for key in keys:
            if key.endswith("_delivery.report"):
                body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
                listed += [line for line in body.decode().splitlines() if line]
        assert len(listed) == len(set(listed)), "a file listed by two reports"
        uids: list[str] = []
        for key in listed:
            body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
            uids += [orjson.loads(line)["uid"] for line in gzip.decompress(body).split(b"\n") if line]
        return uids
