"""Runs by transaction horizon: late commits, merge updates, crashed and failed runs, one run at a time, all sources."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import orjson
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from exporter.definitions import ExportStore
from exporter.destinations import Destination, open_destination
from exporter.partitioning import report_stamp
from exporter.runs import ExportRunner, RunFailed, RunInProgress
from headrace.catalog import Catalog
from headrace.platform.scratch import ScratchS3
from tests.exporter.conftest import StorageTable, create_export, gunzip, s3_destination, s3_objects, settle
from tests.exporter.test_s3_runs import RecordingDestination, data_keys, report_of


def ndjson_rows(objects: dict[str, bytes], keys: list[str]) -> list[dict]:
    return [orjson.loads(line) for k in keys for line in gunzip(objects[k]).splitlines()]


async def test_rows_committed_after_a_run_began_are_neither_lost_nor_doubled(
    runner: ExportRunner, store: ExportStore, table: StorageTable, pool: asyncpg.Pool, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store, sources=[table.name], format="ndjson", destination=s3_destination(s3_server, bucket).model_dump()
    )
    await table.insert([{"n": 1}])
    await settle(pool)  # the horizon is past row 1
    await table.evolve([{"n": 2}])
    conn = await asyncpg.connect(pool._connect_args[0])
    try:
        transaction = conn.transaction()
        await transaction.start()
        await table.insert([{"n": 2}], conn)  # written but not committed while the next two runs go

        first = await runner.run(export, settle_first=False)
        assert first.rows == 1
        # Row 3 commits after row 2's transaction began: it waits behind it, whatever its own commit time.
        await table.insert([{"n": 3}])
        second = await runner.run(export, settle_first=False)
        assert second.status == "empty"

        await transaction.commit()
    finally:
        await conn.close()
    third = await runner.run(export)
    assert third.rows == 2
    objects = await s3_objects(s3_server, bucket)
    assert sorted(r["n"] for r in ndjson_rows(objects, data_keys(objects))) == [1, 2, 3]
    assert (await runner.run(export)).status == "empty"


async def test_a_merge_update_exports_the_row_again_with_its_new_values(
    runner: ExportRunner, store: ExportStore, table: StorageTable, pool: asyncpg.Pool, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store, sources=[table.name], format="ndjson", destination=s3_destination(s3_server, bucket).model_dump()
    )
    await table.insert([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}])
    first = await runner.run(export)
    assert first.rows == 3
    v, key = await table.column("v"), await table.column("id")
    # What a merge does to a row: new values and the transaction that wrote them.
    await pool.execute(
        f"UPDATE {table.storage.qualified_table} SET {v} = 'a2', _xid = pg_current_xact_id() WHERE {key} = 1"
    )
    await pool.execute(f"DELETE FROM {table.storage.qualified_table} WHERE {key} = 3")  # a deleted row just stops
    second = await runner.run(export)
    assert second.rows == 1
    objects = await s3_objects(s3_server, bucket)
    _, listed = report_of(objects, before={first.report})
    assert [(r["id"], r["v"]) for r in ndjson_rows(objects, listed)] == [(1, "a2")]


class BlockingDestination(Destination):
    """The real S3 destination, holding the first data file until released (to catch a run in the middle)."""

    def __init__(self, inner: Destination) -> None:
        self.inner = inner
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def put_file(self, local: Path, name: str) -> None:
        await self.inner.put_file(local, name)
        self.reached.set()
        await self.release.wait()

    async def put_bytes(self, data: bytes, name: str) -> None:
        await self.inner.put_bytes(data, name)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)


async def test_one_run_at_a_time_and_a_crashed_run_is_replayed_under_its_stamp(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    destination = s3_destination(s3_server, bucket)
    export = await create_export(store, sources=[table.name], max_rows_per_file=1, destination=destination.model_dump())
    await table.insert([{"hit_time_utc": f"2021-04-08T1{i}:00:00Z", "n": i} for i in range(3)])
    blocking = BlockingDestination(open_destination(destination, runner.settings, runner.pool))
    crashed = asyncio.create_task(runner.run(export, destination=blocking))
    await blocking.reached.wait()
    with pytest.raises(RunInProgress):
        await runner.run(export)
    # The process dies here: no failure recorded, the run stays 'running' with files delivered.
    crashed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashed
    (dead,) = await store.runs(export)
    assert dead["status"] == "running"
    objects = await s3_objects(s3_server, bucket)
    assert data_keys(objects) and not [k for k in objects if k.endswith(".report")]

    replay = await runner.run(export)
    assert replay.status == "succeeded" and replay.rows == 3 and str(replay.replay_of) == dead["id"]
    objects = await s3_objects(s3_server, bucket)
    report, listed = report_of(objects)
    assert sorted(listed) == data_keys(objects) and len(listed) == 3
    # The same stamp as the run that died: the report is the one it would have written.
    assert report.rsplit("/", 1)[1] == f"{report_stamp(datetime.fromisoformat(dead['started_at']))}_delivery.report"
    runs = await store.runs(export)
    assert [r["status"] for r in runs] == ["succeeded", "failed"]
    assert runs[0]["replay_of"] == runs[1]["id"] and runs[0]["xid_to"] == runs[1]["xid_to"]


async def test_a_parquet_folder_reads_in_place_with_hive_partitioning_every_row_once(
    runner: ExportRunner, store: ExportStore, table: StorageTable, pool: asyncpg.Pool, s3_server: ScratchS3, bucket: str
) -> None:
    destination = s3_destination(s3_server, bucket, folder="lake")
    export = await create_export(
        store,
        sources=[table.name],
        format="parquet",
        partition_level="quarter-hour",
        max_rows_per_file=3,
        destination=destination.model_dump(),
    )
    # Quarter hours of rows 0..11: 00-15 holds 0 1 2 9 10, 15-30 3 4 11, 30-45 5 6, 45-60 7 8; row 12 is unknown.
    await table.insert([{"hit_time_utc": f"2021-04-08T10:{i * 7 % 60:02d}:00Z", "n": i} for i in range(12)])
    await table.insert([{"n": 12}])
    # A run fails at its last file (unknown) after the others went up; then rows 5 and 6 are updated, so the
    # range its replay reads has nothing left for 30-45: that file of the failed attempt must go.
    failing = RecordingDestination(
        open_destination(destination, runner.settings, runner.pool), fail_on="date=unknown", fail_after=5
    )
    with pytest.raises(RunFailed):
        await runner.run(export, destination=failing)
    assert any("min=30-45" in k for k in data_keys(await s3_objects(s3_server, bucket)))
    n = await table.column("n")
    await pool.execute(f"UPDATE {table.storage.qualified_table} SET _xid = pg_current_xact_id() WHERE {n} IN (5, 6)")
    replay = await runner.run(export)
    assert replay.status == "succeeded" and replay.rows == 11
    await table.insert([{"hit_time_utc": "2021-04-08T10:01:00Z", "n": 13}])
    assert (await runner.run(export)).rows == 3  # row 13, and rows 5 and 6 with their new transaction

    filesystem = pafs.S3FileSystem(
        access_key=s3_server.access_key_id,
        secret_key=s3_server.secret_access_key,
        endpoint_override=s3_server.endpoint_url,
        region=s3_server.region,
    )
    root = f"{bucket}/lake/{export.name}/data"
    read = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive").to_table()
    assert sorted(read.column("n").to_pylist()) == list(range(14))
    assert set(read.column_names) >= {"n", "hit_time_utc", "_storage", "date", "hour", "min"}
    assert read.filter(ds.field("date") == "unknown").column("n").to_pylist() == [12]
    objects = await s3_objects(s3_server, bucket)
    assert all(pq.ParquetFile(io.BytesIO(objects[k])).metadata.num_rows <= 3 for k in data_keys(objects))


async def test_all_sources_take_new_storages_and_widen_shared_keys(
    runner: ExportRunner, store: ExportStore, table: StorageTable, pool: asyncpg.Pool, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources="all",
        format="parquet",
        partition_level="date",
        destination=s3_destination(s3_server, bucket).model_dump(),
    )
    await runner.run(export)  # whatever other tests left in the database goes out now
    await table.insert([{"hit_time_utc": "2021-04-08T10:00:00Z", "shared": 1, "only_a": True}])
    storage, _ = await Catalog(pool).create(f"t_{uuid.uuid4().hex[:10]}")  # created after the export
    later = StorageTable(pool, storage)
    await later.insert([{"hit_time_utc": "2021-04-08T11:00:00Z", "shared": "text"}])
    await runner.run(export)
    objects = await s3_objects(s3_server, bucket)
    reports = sorted(k for k in objects if k.endswith(".report"))
    last = objects[reports[-1]].decode().splitlines()
    rows = [r for k in last for r in pq.read_table(io.BytesIO(objects[k])).to_pylist()]
    ours = {r["_storage"]: r for r in rows if r["_storage"] in (table.name, later.name)}
    assert ours[table.name]["shared"] == "1" and ours[later.name]["shared"] == "text"  # integer + string: string
    assert ours[table.name]["only_a"] is True and ours[later.name]["only_a"] is None
