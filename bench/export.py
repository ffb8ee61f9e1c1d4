"""Export throughput to S3 (moto) as CSV.gz and Parquet, against pyarrow + gzip alone on the same rows; peak memory."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aioboto3
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from aiokafka import AIOKafkaProducer

from bench.harness import BenchEnv, Figure
from exporter.definitions import ExportDefinition, ExportStore
from exporter.formats import GZIP_LEVEL
from exporter.runs import ExportRunner
from headrace.catalog import Catalog
from headrace.kafka import Topics, ensure_topics
from headrace.platform.scratch import running_s3
from headrace.postgres import create_pool, migrate
from headrace.rows import decode_row, encode_row
from headrace.settings import Settings

THROUGHPUT_ROWS = 200_000
MEMORY_ROWS = 1_000_000
MEMORY_BASELINE_ROWS = 100_000
PARTITIONS = 4


def make_row(i: int) -> dict[str, Any]:
    partition = i % PARTITIONS
    return {
        "hit_time_utc": f"2021-04-08T{(i // 5000) % 24:02d}:{(i // 100) % 60:02d}:{i % 60:02d}Z",
        "event_id": 192746238290 + i,
        "page": f"page-{i % 500}",
        "visitor_id": f"v-{i % 20000:06d}",
        "duration": (i % 977) * 0.25,
        "visitor_privacy_consent": i % 10 != 0,
        "_event_id": uuid.UUID(int=i).hex,
        "_received_at": "2021-04-08T12:00:00Z",
        "_inserted_at": "2021-04-08T12:00:01Z",
        "_source_partition": partition,
        "_source_offset": i // PARTITIONS,
    }


async def produce_rows(settings: Settings, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka_bootstrap(), acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        pending = []
        for i in range(count):
            pending.append(await producer.send(topic, encode_row(make_row(i)), partition=i % PARTITIONS))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def new_storage(settings: Settings, catalog: Catalog, rows: int) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    await catalog.create(name)
    topic = Topics(settings.topic_prefix).rows(name)
    await ensure_topics(settings, [topic], partitions=PARTITIONS)
    await produce_rows(settings, topic, rows)
    return name


def definition(storage: str, fmt: str, s3: Any, bucket: str) -> ExportDefinition:
    return ExportDefinition.model_validate(
        {
            "name": f"{fmt}_{uuid.uuid4().hex[:6]}",
            "sources": [storage],
            "format": fmt,
            "partition_level": "hour",
            "scheduled": False,
            "destination": {
                "kind": "s3",
                "bucket": bucket,
                "folder": "bench",
                "endpoint_url": s3.endpoint_url,
                "access_key_id": s3.access_key_id,
                "secret_access_key": s3.secret_access_key,
                "region": s3.region,
            },
        }
    )


def baseline_seconds(rows: list[dict[str, Any]], fmt: str, directory: Path) -> float:
    """pyarrow and gzip alone: the same rows (as the exported rows look) to one local gzip file."""
    started = time.perf_counter()
    table = pa.Table.from_pylist(rows)
    path = directory / f"baseline.{fmt}.gz"
    # The same gzip level as the exporter's writers, so the ratio compares the work around it.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as sink:
        if fmt == "csv":
            pacsv.write_csv(table, sink)
        else:
            pq.write_table(table, sink, compression="none")
    return time.perf_counter() - started


def peak_rss_of_run(settings: Settings, export_name: str) -> float:
    """Peak RSS (MiB) of a fresh process that runs one export and nothing else."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.export", "--child", settings.model_dump_json(), export_name],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


async def run(env: BenchEnv) -> list[Figure]:
    settings = env.settings
    pool = await create_pool(settings, max_size=4)
    await migrate(pool)
    catalog, store = Catalog(pool), ExportStore(pool)
    runner = ExportRunner(settings, pool)
    figures: list[Figure] = []
    try:
        with running_s3() as s3:
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            async with aioboto3.Session().client(
                "s3",
                endpoint_url=s3.endpoint_url,
                aws_access_key_id=s3.access_key_id,
                aws_secret_access_key=s3.secret_access_key,
                region_name=s3.region,
            ) as client:
                await client.create_bucket(Bucket=bucket)
            storage = await new_storage(settings, catalog, THROUGHPUT_ROWS)
            # The baseline writes what the export writes: the decoded rows, shaped as exported rows.
            exported = [
                {"_storage": storage}
                | {k: v for k, v in decode_row(encode_row(make_row(i))).items() if not k.startswith("_source_")}
                for i in range(THROUGHPUT_ROWS)
            ]
            with tempfile.TemporaryDirectory() as tmp:
                for fmt, label in (("csv", "CSV.gz"), ("parquet", "Parquet (gzip)")):
                    export = await store.create(definition(storage, fmt, s3, bucket))
                    started = time.perf_counter()
                    result = await runner.run(export)
                    seconds = time.perf_counter() - started
                    assert result.rows == THROUGHPUT_ROWS, result.rows
                    base = await asyncio.to_thread(baseline_seconds, exported, fmt, Path(tmp))
                    figures.append(
                        Figure(
                            f"export {label} to S3, {THROUGHPUT_ROWS} rows",
                            THROUGHPUT_ROWS / seconds,
                            "rows/s",
                            THROUGHPUT_ROWS / base,
                        )
                    )
            del exported
            small = await new_storage(settings, catalog, MEMORY_BASELINE_ROWS)
            large = await new_storage(settings, catalog, MEMORY_ROWS)
            small_export = await store.create(definition(small, "csv", s3, bucket))
            large_export = await store.create(definition(large, "csv", s3, bucket))
            small_rss = await asyncio.to_thread(peak_rss_of_run, settings, small_export.name)
            large_rss = await asyncio.to_thread(peak_rss_of_run, settings, large_export.name)
            figures.append(Figure(f"peak RSS of a {MEMORY_ROWS:,}-row CSV export run", large_rss, "MiB", small_rss))
    finally:
        await pool.close()
    return figures


async def _child(settings_json: str, export_name: str) -> None:
    settings = Settings.model_validate(json.loads(settings_json))
    pool = await create_pool(settings, max_size=2)
    try:
        export = await ExportStore(pool).get(export_name)
        await ExportRunner(settings, pool).run(export)
    finally:
        await pool.close()
    print(high_water_mib())


def high_water_mib() -> float:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the parent's peak at fork time.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    asyncio.run(_child(sys.argv[2], sys.argv[3]))
