"""Export runs to S3 (moto) as CSV.gz and Parquet against pyarrow writing the same table; readers; peak memory."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import aioboto3
import asyncpg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.harness import BenchEnv, Figure
from exporter.definitions import ExportDefinition, ExportStore
from exporter.runs import ExportRunner
from headrace.catalog import Catalog, Storage
from headrace.formats import GZIP_LEVEL
from headrace.platform.scratch import running_s3
from headrace.postgres import Connection, create_pool, migrate, quote_ident
from headrace.settings import Settings

THROUGHPUT_ROWS = 500_000
MEMORY_ROWS = 1_000_000
MEMORY_BASELINE_ROWS = 100_000
SAMPLE = {
    "hit_time_utc": "2021-04-08T10:58:14Z",
    "event_id": 192746238290,
    "page": "page-1",
    "visitor_id": "v-000001",
    "duration": 0.25,
    "visitor_privacy_consent": True,
}
# Row i: 24 hours of event times over the rows (hour partitions), 500 pages, 20,000 visitors, one in ten refusing.
VALUES = {
    "hit_time_utc": "timestamptz '2021-04-08' + (i % 86400) * interval '1 second'",
    "event_id": "192746238290 + i",
    "page": "'page-' || (i % 500)",
    "visitor_id": "'v-' || lpad((i % 20000)::text, 6, '0')",
    "duration": "(i % 977) * 0.25",
    "visitor_privacy_consent": "i % 10 <> 0",
}


async def new_storage(pool: asyncpg.Pool, rows: int) -> Storage:
    """A storage holding `rows` rows, written by one INSERT … SELECT (as a big batch would be)."""
    catalog = Catalog(pool)
    storage, _ = await catalog.create(f"bench_{uuid.uuid4().hex[:8]}")
    async with pool.acquire() as conn, conn.transaction():
        model = await catalog.model(storage.id, conn)
        change, _ = model.plan([SAMPLE])
        model = await catalog.evolve(conn, storage, model, change)
    columns = [quote_ident(model.by_key[k].name) for k in VALUES]
    await pool.execute(
        f"INSERT INTO {storage.qualified_table} (_event_id, _received_at, {', '.join(columns)})"
        f" SELECT md5(i::text), now(), {', '.join(VALUES.values())} FROM generate_series(1, {rows}) i"
    )
    await pool.execute(f"VACUUM ANALYZE {storage.qualified_table}")
    return storage


async def settle(pool: asyncpg.Pool) -> None:
    """Wait until every transaction begun so far has ended: the next run's horizon then passes every row."""
    mark = await pool.fetchval("SELECT pg_current_xact_id()::text")
    while not await pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::text::xid8", mark):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


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


def exported_table(url: str, storage: Storage) -> pa.Table:
    """The rows as the export writes them (system properties, then the model's), read once, outside the timings."""
    with adbc.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT '{storage.name}' AS _storage, _event_id, _received_at, _inserted_at, hit_time_utc, event_id,"
            f" page, visitor_id, duration, visitor_privacy_consent FROM {storage.qualified_table}"
        )
        return cursor.fetch_arrow_table()


def pyarrow_seconds(table: pa.Table, fmt: str, directory: Path) -> float:
    """pyarrow alone writing the table: CSV then gzip at the exporter's level, or Parquet with gzip inside."""
    started = time.perf_counter()
    if fmt == "csv":
        out = pa.BufferOutputStream()
        pacsv.write_csv(table, out)
        # zlib at the exporter's level: pyarrow's own gzip stream is fixed at level 9, three times slower.
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        (directory / "baseline.csv.gz").write_bytes(compressor.compress(out.getvalue()) + compressor.flush())
    else:
        pq.write_table(table, directory / "baseline.parquet", compression="gzip", compression_level=GZIP_LEVEL)
    return time.perf_counter() - started


def adbc_read_seconds(url: str, sql: str) -> float:
    started = time.perf_counter()
    with adbc.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(sql)
        for _ in cursor.fetch_record_batch():
            pass
    return time.perf_counter() - started


class _Feed:
    """A file-like object pyarrow's CSV reader pulls from, fed chunk by chunk by asyncpg's COPY."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue(64)
        self.buffer = b""
        self.done = False
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.buffer) < size):
            chunk = self.chunks.get()
            if chunk is None:
                self.done = True
            else:
                self.buffer += chunk
        size = len(self.buffer) if size < 0 else size
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


async def copy_read_seconds(conn: Connection, sql: str, types: dict[str, pa.DataType]) -> float:
    """asyncpg `COPY (…) TO STDOUT` as CSV, parsed into Arrow batches by pyarrow's streaming CSV reader."""
    feed = _Feed()

    def parse() -> None:
        reader = pacsv.open_csv(
            feed,
            read_options=pacsv.ReadOptions(column_names=list(types)),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types, true_values=["t"], false_values=["f"], quoted_strings_can_be_null=False
            ),
        )
        for _ in reader:
            pass

    started = time.perf_counter()
    parser = threading.Thread(target=parse)
    parser.start()

    async def sink(chunk: bytes) -> None:
        await asyncio.to_thread(feed.chunks.put, bytes(chunk))

    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.copy_from_query(sql, output=sink, format="csv")
    await asyncio.to_thread(feed.chunks.put, None)
    await asyncio.to_thread(parser.join)
    return time.perf_counter() - started


def run_in_child(settings: Settings, export_name: str) -> tuple[float, float, int]:
    """One export run in a fresh process, as the exporter service runs it (moto's server, in this process, does
    not share its GIL): the run's seconds, the process's peak RSS (MiB) and the rows exported."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.export", "--child", settings.model_dump_json(), export_name],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, rss, rows = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(rss), int(rows)


async def run(env: BenchEnv) -> list[Figure]:
    settings = env.settings
    url = settings.require_database_url()
    pool = await create_pool(settings, max_size=4)
    await migrate(pool)
    store = ExportStore(pool, settings)
    figures: list[Figure] = []
    try:
        storage = await new_storage(pool, THROUGHPUT_ROWS)
        columns = "_event_id, _received_at, _inserted_at, hit_time_utc, event_id, page, visitor_id, duration"
        sql = f"SELECT {columns}, visitor_privacy_consent FROM {storage.qualified_table}"
        timestamp = pa.timestamp("us", "UTC")
        types = dict.fromkeys(["_event_id", "page", "visitor_id"], pa.string())
        types |= {"_received_at": timestamp, "_inserted_at": timestamp, "hit_time_utc": timestamp}
        types |= {"event_id": pa.int64(), "duration": pa.float64(), "visitor_privacy_consent": pa.bool_()}
        types = {k: types[k] for k in [*columns.split(", "), "visitor_privacy_consent"]}
        async with pool.acquire() as conn:
            copy = min([await copy_read_seconds(conn, sql, types) for _ in range(3)])
        adbc_seconds = min([await asyncio.to_thread(adbc_read_seconds, url, sql) for _ in range(3)])
        # The reader the exporter uses (ADBC) against asyncpg COPY … TO STDOUT parsed by pyarrow's CSV reader.
        read = f"read {THROUGHPUT_ROWS} rows, ADBC vs asyncpg COPY"
        figures.append(Figure(read, THROUGHPUT_ROWS / adbc_seconds, "rows/s", THROUGHPUT_ROWS / copy))
        with running_s3() as s3, tempfile.TemporaryDirectory() as tmp:
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            async with aioboto3.Session().client(
                "s3",
                endpoint_url=s3.endpoint_url,
                aws_access_key_id=s3.access_key_id,
                aws_secret_access_key=s3.secret_access_key,
                region_name=s3.region,
            ) as client:
                await client.create_bucket(Bucket=bucket)
            table = await asyncio.to_thread(exported_table, url, storage)
            await settle(pool)
            for fmt, label in (("csv", "CSV.gz"), ("parquet", "Parquet (gzip)")):
                export = await store.create(definition(storage.name, fmt, s3, bucket))
                seconds, _, rows = await asyncio.to_thread(run_in_child, settings, export.name)
                assert rows == THROUGHPUT_ROWS, rows
                base = min([await asyncio.to_thread(pyarrow_seconds, table, fmt, Path(tmp)) for _ in range(2)])
                name = f"export {label} to S3, {THROUGHPUT_ROWS} rows"
                figures.append(Figure(name, THROUGHPUT_ROWS / seconds, "rows/s", THROUGHPUT_ROWS / base))
            del table
            small = await new_storage(pool, MEMORY_BASELINE_ROWS)
            large = await new_storage(pool, MEMORY_ROWS)
            small_export = await store.create(definition(small.name, "csv", s3, bucket))
            large_export = await store.create(definition(large.name, "csv", s3, bucket))
            await settle(pool)
            _, small_rss, _ = await asyncio.to_thread(run_in_child, settings, small_export.name)
            _, large_rss, _ = await asyncio.to_thread(run_in_child, settings, large_export.name)
            figures.append(Figure(f"peak RSS of a {MEMORY_ROWS:,}-row CSV export run", large_rss, "MiB", small_rss))
    finally:
        await pool.close()
    return figures


async def _child(settings_json: str, export_name: str) -> None:
    settings = Settings.model_validate(json.loads(settings_json))
    pool = await create_pool(settings, max_size=2)
    try:
        export = await ExportStore(pool, settings).get(export_name)
        # Warm, as a running exporter service is: modules imported, botocore's models and ADBC's driver loaded.
        import headrace.formats.csv
        import headrace.formats.parquet  # noqa: F401
        from exporter.destinations import open_destination

        async with open_destination(export.definition.destination, settings, pool):
            pass
        await asyncio.to_thread(lambda: adbc.connect(settings.require_database_url()).close())
        started = time.perf_counter()
        result = await ExportRunner(settings, pool).run(export)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    print(seconds, high_water_mib(), result.rows)


def high_water_mib() -> float:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the parent's peak at fork time.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    asyncio.run(_child(sys.argv[2], sys.argv[3]))
