"""The scheduler, the `headrace export` CLI and the exporter's HTTP API on a running platform."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime

import aiohttp
import orjson
from prometheus_client import REGISTRY

from exporter import metrics
from exporter.definitions import ExportStore
from exporter.runs import ExportRunner
from exporter.scheduler import Scheduler
from headrace.platform.scratch import ScratchS3
from tests.conftest import ADMIN, RunningPlatform
from tests.eventually import eventually
from tests.exporter.conftest import StorageTable, create_export, s3_destination, s3_objects, settle
from tests.exporter.test_s3_runs import SEED_ROWS, data_keys


async def test_scheduler_starts_a_run_at_each_boundary(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources=[table.name],
        frequency_minutes=15,
        scheduled=True,
        destination=s3_destination(s3_server, bucket).model_dump(),
    )
    await table.insert(SEED_ROWS)
    await settle(runner.pool)
    scheduler = Scheduler(store, runner)
    await scheduler.tick(datetime(2030, 1, 1, 10, 14, tzinfo=UTC))  # first sight: wait for a boundary
    await scheduler.tick(datetime(2030, 1, 1, 10, 14, 59, tzinfo=UTC))
    assert export.id not in scheduler.running
    await scheduler.tick(datetime(2030, 1, 1, 10, 15, tzinfo=UTC))
    await scheduler.running[export.id]
    runs = await store.runs(export)
    assert [(r["trigger"], r["status"], r["rows"]) for r in runs] == [("schedule", "succeeded", 4)]
    assert len(data_keys(await s3_objects(s3_server, bucket))) == 2
    await scheduler.stop()
    # What an "export overdue" alert compares: the schedule's interval, and the last success, which a scheduler
    # started afresh (a restarted exporter) reads back from the recorded runs.
    labels = {"export": export.name}
    assert REGISTRY.get_sample_value("headrace_export_schedule_interval_seconds", labels) == 15 * 60
    metrics.LAST_SUCCESS.remove(export.name)
    restarted = Scheduler(store, runner)
    await restarted.tick(datetime(2030, 1, 1, 10, 16, tzinfo=UTC))
    [run] = await store.runs(export)
    finished = datetime.fromisoformat(run["finished_at"]).timestamp()
    assert REGISTRY.get_sample_value("headrace_export_last_success_timestamp_seconds", labels) == finished
    await store.delete(export.name)
    await restarted.tick(datetime(2030, 1, 1, 10, 17, tzinfo=UTC))
    assert REGISTRY.get_sample_value("headrace_export_schedule_interval_seconds", labels) is None


async def test_cli_and_http_api(
    platform: RunningPlatform, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    name = f"cli{table.name[2:]}"
    secret = "s3cr3t-never-shown"
    created = platform.cli_json(
        "export", "create", name, "--source", table.name, "--destination", "s3", "--bucket", bucket,
        "--folder", "cli", "--endpoint-url", s3_server.endpoint_url, "--access-key-id", "AKIATEST",
        "--secret-access-key", secret, "--format", "csv", "--separator", "|", "--partition", "half-hour",
        "--frequency", "30", "--no-schedule", "--privacy-filter", "--parquet-compression", "zstd",
    )  # fmt: skip
    assert created["destination"]["secret_access_key"] == "***"
    assert created["frequency_minutes"] == 30 and created["partition_level"] == "half-hour"
    assert created["parquet_compression"] == "zstd"
    listed = platform.cli("export", "list", "--json").stdout
    assert name in listed and secret not in listed
    shown = platform.cli("export", "show", name, "--json").stdout
    assert secret not in shown and orjson.loads(shown)["sources"] == [table.name]

    await table.insert(SEED_ROWS)
    await settle(table.pool)
    ran = platform.cli_json("export", "run", name)  # through the exporter service's API
    assert ran["status"] == "succeeded" and ran["rows"] == 4
    regenerated = platform.cli_json(
        "export", "regenerate", name, "--from", "2021-04-08T10:00:00Z", "--to", "2021-04-08T11:00:00Z",
        "--folder", "again",
    )  # fmt: skip
    assert regenerated["rows"] == 2  # the two rows of 10:5x, from the storage's table
    objects = await s3_objects(s3_server, bucket)
    assert any(k.startswith(f"cli/{name}/data/date=2021-04-08/hour=10/min=30-60/") for k in objects)

    base = platform.settings.service_url("exporter")
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.get(f"{base}/api/exports/{name}") as response:
            assert response.status == 200 and secret not in await response.text()
        async with http.get(f"{base}/api/exports/{name}/runs") as response:
            assert [r["kind"] for r in await response.json()] == ["regenerate", "live"]
        async with http.post(f"{base}/api/exports", json={"name": "x", "sources": []}) as response:
            assert response.status == 422 and "sources" in (await response.json())["error"]
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        assert f'headrace_export_runs_total{{export="{name}",kind="live",result="succeeded"}} 1.0' in text
        assert f'headrace_export_last_success_timestamp_seconds{{export="{name}"}}' in text
        async with http.post(f"{base}/api/exports/nope/runs") as response:
            assert response.status == 404
        body = {"name": name, "sources": [table.name], "destination": {"kind": "s3", "bucket": bucket}}
        async with http.post(f"{base}/api/exports", json=body) as response:
            assert response.status == 409
    platform.cli("export", "delete", name)
    missing = platform.cli("export", "show", name, check=False)
    assert missing.returncode == 1 and "no export named" in missing.stderr


async def test_end_to_end_push_transform_export(
    platform: RunningPlatform, storage_name: str, s3_server: ScratchS3, bucket: str
) -> None:
    """Pushed events, written by transform into the storage's table, come out as exported files."""
    created = platform.cli_json("storage", "create", storage_name)
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        for row in SEED_ROWS:
            async with http.post(created["push_url"], json=row) as response:
                assert response.status == 200, await response.text()
    platform.cli_json(
        "export", "create", storage_name, "--source", storage_name, "--destination", "s3", "--bucket", bucket,
        "--endpoint-url", s3_server.endpoint_url, "--access-key-id", "a", "--secret-access-key", "b",
        "--format", "ndjson", "--no-schedule",
    )  # fmt: skip
    exported = 0

    async def run_until_all_exported() -> bool:
        # Rows transform has not written yet leave in a later run; each run ships only what is new.
        nonlocal exported
        exported += (await asyncio.to_thread(platform.cli_json, "export", "run", storage_name))["rows"]
        return exported >= len(SEED_ROWS)

    await eventually(run_until_all_exported, what="every pushed row exported", interval=0.5)
    assert exported == len(SEED_ROWS)
    objects = await s3_objects(s3_server, bucket)
    lines = [orjson.loads(x) for k in data_keys(objects) for x in gzip.decompress(objects[k]).splitlines()]
    assert sorted(r["event_id"] for r in lines) == sorted(r["event_id"] for r in SEED_ROWS)
    assert {k.split("/data/")[1].rsplit("/", 1)[0] for k in data_keys(objects)} == {
        "date=2021-04-08/hour=10",
        "date=2021-04-08/hour=11",
    }
