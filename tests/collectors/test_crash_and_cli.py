"""The collector CLI end to end, batches and replay, and a collector (its ingest) killed between producing and its
cursor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from headrace.kafka import Topics
from ingest.collectors.runner import PAUSE_MARKER
from tests.collectors.conftest import storage_rows
from tests.conftest import ADMIN
from tests.eventually import eventually
from tests.services import ServiceProcess


async def transform_caught_up(pool: asyncpg.Pool, bootstrap: str, topic: str) -> None:
    """Wait until transform's positions on the topic reach its end: every event sent so far is applied."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()

    async def check() -> bool:
        rows = await pool.fetch(
            "SELECT partition, max(next_offset) AS next FROM headrace.stream_positions WHERE topic = $1 GROUP BY 1",
            topic,
        )
        reached = {r["partition"]: r["next"] for r in rows}
        return all(reached.get(tp.partition, 0) >= end for tp, end in ends.items() if end > 0)

    await eventually(check)


async def kill_while_paused(platform: Any, collector: str, log_dir: Path) -> str:
    """Run the collector in an ingest of its own that pauses after Kafka acked its batch, before its cursor moves, and
    kill -9 it there; returns the job's URL (its job is left running with no process)."""
    env = platform.env | {"HEADRACE_COLLECTOR_TEST_PAUSE_SECONDS": "120", "HEADRACE_COLLECTOR_SCHEDULER": "false"}
    ingest = ServiceProcess("paused ingest", "ingest", env, "HEADRACE_INGEST_PORT", log_dir / "paused-ingest.log")
    ingest.start()
    try:
        await ingest.ready()
        async with aiohttp.ClientSession(headers=ADMIN) as session:
            async with session.post(f"{ingest.url}/api/collectors/{collector}/run") as response:
                assert response.status == 202, await response.text()
                job = (await response.json())["url"]

        async def paused() -> bool:
            return PAUSE_MARKER in ingest.log_path.read_text()

        await eventually(paused)
        ingest.kill()
    finally:
        ingest.stop()
    return job


def test_cli_create_run_batches_replay(platform: Any, database_url: str, source_table: str, storage_name: str) -> None:
    import asyncio

    async def setup() -> None:
        conn = await asyncpg.connect(database_url)
        await conn.execute(f"CREATE TABLE {source_table} (id int PRIMARY KEY, v text)")
        await conn.execute(f"INSERT INTO {source_table} VALUES (1, 'a'), (2, 'b')")
        await conn.close()

    asyncio.run(setup())
    dsn = database_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    created = platform.cli_json(
        "collector",
        "create",
        source_table,
        "--storage",
        storage_name,
        "--from",
        dsn,
        "--table",
        source_table,
        "--mode",
        "snapshot",
        "--cron",
        "0 3 * * *",
    )
    assert "s3cret" not in str(created) and "***" in created["source"]["dsn"]
    assert created["load_mode"] == "replace" and created["next_run_at"]
    shown = platform.cli("collector", "show", source_table).stdout
    assert "s3cret" not in shown
    assert [c["name"] for c in platform.cli_json("collector", "list")].count(source_table) == 1

    ran = platform.cli_json("collector", "run", source_table)
    batch_id = ran["batches"][0]["batch_id"]
    listed = platform.cli_json("collector", "batches", source_table)
    assert [(b["batch_id"], b["rows"], b["status"]) for b in listed] == [(batch_id, 2, "sent")]
    assert batch_id in platform.cli("collector", "batches", source_table).stdout

    replayed = platform.cli_json("collector", "replay", source_table, batch_id)
    assert replayed["rows"] == 2 and replayed["replay_of"] == batch_id and replayed["batch_id"] != batch_id
    statuses = {
        b["batch_id"]: (b["status"], b["replay_of"]) for b in platform.cli_json("collector", "batches", source_table)
    }
    assert statuses[replayed["batch_id"]] == ("sent", batch_id)
    missing = platform.cli("collector", "show", "no-such-collector", check=False)
    assert missing.returncode == 1 and "no collector named" in missing.stderr
    platform.cli("collector", "delete", source_table)
    assert source_table not in [c["name"] for c in platform.cli_json("collector", "list")]


async def test_a_collector_killed_before_its_cursor_moves_loses_and_duplicates_nothing(
    platform: Any,
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    source_table: str,
    storage_name: str,
    tmp_path: Path,
) -> None:
    await pool.execute(f"CREATE TABLE {source_table} (id bigserial PRIMARY KEY, v text)")
    await pool.execute(f"INSERT INTO {source_table} (v) VALUES ('a'), ('b'), ('c')")
    platform.cli(
        "collector",
        "create",
        source_table,
        "--storage",
        storage_name,
        "--from",
        database_url,
        "--table",
        source_table,
        "--mode",
        "incremental-appends",
        "--cursor-column",
        "id",
    )
    job = await kill_while_paused(platform, source_table, tmp_path)
    batches = platform.cli_json("collector", "batches", source_table)
    assert [b["status"] for b in batches] == ["pending"]

    # Any instance answers for the job: once its heartbeat stopped, it is failed.
    async def failed() -> dict[str, Any]:
        async with aiohttp.ClientSession(headers=ADMIN) as session:
            async with session.get(platform.settings.service_url("ingest") + job) as response:
                found = await response.json()
        assert found["state"] == "failed", found
        return found

    assert "stopped before it finished" in (await eventually(failed))["error"]

    # The restart sends the pending batch again, same id, then the rows that came since.
    again = platform.cli_json("collector", "run", source_table)
    assert again["batches"][0]["batch_id"] == batches[0]["batch_id"]
    await pool.execute(f"INSERT INTO {source_table} (v) VALUES ('d'), ('e')")
    platform.cli_json("collector", "run", source_table)

    expected = [(r["id"], r["v"]) for r in await pool.fetch(f"SELECT id, v FROM {source_table}")]
    await transform_caught_up(pool, kafka_bootstrap, Topics().ingest(storage_name))
    assert await storage_rows(pool, storage_name, "id", "v") == sorted(expected)
