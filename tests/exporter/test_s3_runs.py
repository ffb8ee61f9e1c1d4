"""Live export runs to a real S3 API server: the seed's paths, gzip files, formats, filters, reports, late rows."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
from pathlib import Path

import asyncpg
import orjson
import pyarrow.parquet as pq
import pytest

from exporter.definitions import ExportStore
from exporter.destinations import DeliveryFailed, Destination, open_destination
from exporter.runs import ExportRunner, RunFailed
from headrace.platform.scratch import ScratchS3
from headrace.settings import Settings
from tests.exporter.conftest import SettlingRunner, StorageTable, create_export, gunzip, s3_destination, s3_objects

GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# The seed's example table: two rows at 10:5x and two at 11:0x on 2021-04-08.
SEED_ROWS = [
    {"hit_time_utc": "2021-04-08T10:58:14Z", "event_id": 192746238290, "page": "home"},
    {"hit_time_utc": "2021-04-08T10:59:27Z", "event_id": 192746857489, "page": "cart"},
    {"hit_time_utc": "2021-04-08T11:00:28Z", "event_id": 387362092413, "page": "pay;now"},
    {"hit_time_utc": "2021-04-08T11:01:45Z", "event_id": 238290192746, "page": None},
]


def data_keys(objects: dict[str, bytes]) -> list[str]:
    return sorted(k for k in objects if "/data/" in k)


def report_of(objects: dict[str, bytes], before: set[str] = frozenset()) -> tuple[str, list[str]]:
    reports = [k for k in objects if k.endswith("_delivery.report") and k not in before]
    assert len(reports) == 1, reports
    return reports[0], objects[reports[0]].decode().splitlines()


def interval_of_key(key: str) -> str:
    return key.split("/data/")[1].rsplit("/", 1)[0].split("/")[-1]


def read_csv(body: bytes, separator: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(gunzip(body).decode()), delimiter=separator))


class RecordingDestination(Destination):
    """The real S3 destination, noting the order names were delivered in, and failing on demand: at the Nth
    upload started, or at a name matching `fail_on` once `fail_after` other files are delivered."""

    def __init__(
        self, inner: Destination, fail_at_file: int | None = None, fail_on: str | None = None, fail_after: int = 0
    ) -> None:
        self.inner = inner
        self.fail_at_file = fail_at_file
        self.fail_on = fail_on
        self.fail_after = fail_after
        self.order: list[str] = []
        self.started = 0
        self.delivered = asyncio.Condition()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def put_file(self, local: Path, name: str) -> None:
        self.started += 1
        if self.fail_on is not None and re.search(self.fail_on, name):
            async with self.delivered:
                await self.delivered.wait_for(lambda: len(self.order) >= self.fail_after)
            raise DeliveryFailed(f"injected failure delivering {name}")
        if self.started == self.fail_at_file:
            raise DeliveryFailed(f"injected failure delivering {name}")
        await self.inner.put_file(local, name)
        async with self.delivered:
            self.order.append(name)
            self.delivered.notify_all()

    async def put_bytes(self, data: bytes, name: str) -> None:
        await self.inner.put_bytes(data, name)
        self.order.append(name)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)


async def test_csv_hours_report_and_late_rows(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    destination = s3_destination(s3_server, bucket)
    export = await create_export(
        store,
        sources=[table.name],
        format="csv",
        csv_separator=";",
        partition_level="hour",
        destination=destination.model_dump(),
    )
    await table.insert(SEED_ROWS)
    await table.insert([{"hit_time_utc": "not a time", "event_id": 1, "page": "x"}, {"event_id": 2}])

    recorder = RecordingDestination(open_destination(destination, runner.settings, runner.pool))
    first = await runner.run(export, destination=recorder)
    assert first.status == "succeeded"
    assert first.rows == 6 and first.unknown_time == 2
    objects = await s3_objects(s3_server, bucket)
    keys = data_keys(objects)
    name = export.name
    pattern = re.compile(rf"myFolder/{name}/data/date=(2021-04-08/hour=(10|11)|unknown)/data_{GUID}_001_0_0\.csv\.gz")
    assert len(keys) == 3 and all(pattern.fullmatch(k) for k in keys), keys

    # The report is written last and lists exactly the data files; the manifest sits beside it.
    report, listed = report_of(objects)
    assert re.fullmatch(rf"myFolder/{name}/\d{{8}}T\d{{9}}Z_delivery\.report", report)
    assert sorted(listed) == keys
    assert recorder.order[-1] == report
    assert set(recorder.order[:-2]) == set(keys)
    manifest = orjson.loads(objects[report.replace(".report", ".manifest.json")])
    for item in manifest["files"]:
        body = objects[item["name"]]
        assert item["bytes"] == len(body) and item["sha256"] == hashlib.sha256(body).hexdigest()
    assert sum(f["rows"] for f in manifest["files"]) == 6
    assert int(manifest["range"]["xid_from"]) < int(manifest["range"]["xid_to"])

    by_interval = {interval_of_key(k): read_csv(objects[k], ";") for k in keys}
    assert [r["event_id"] for r in by_interval["hour=10"]] == ["192746238290", "192746857489"]
    assert [(r["event_id"], r["page"]) for r in by_interval["hour=11"]] == [
        ("387362092413", "pay;now"),
        ("238290192746", ""),
    ]
    assert {r["event_id"] for r in by_interval["date=unknown"]} == {"1", "2"}
    first_row = by_interval["hour=10"][0]
    assert first_row["_storage"] == table.name
    # The column widened to text when "not a time" came: the datetimes it held read back as ISO-8601 text.
    assert first_row["hit_time_utc"] == "2021-04-08T10:58:14Z"
    assert first_row["_received_at"] == "2021-04-08T12:00:00Z"

    # A row inserted late, for 11:xx, goes out with the next run as a new file in the old interval.
    await table.insert([{"hit_time_utc": "2021-04-08T11:30:00Z", "event_id": 99, "page": "late"}])
    second = await runner.run(export)
    assert second.status == "succeeded" and second.rows == 1
    objects_after = await s3_objects(s3_server, bucket)
    new_keys = sorted(set(data_keys(objects_after)) - set(keys))
    assert len(new_keys) == 1 and "/date=2021-04-08/hour=11/" in new_keys[0]
    _, listed_second = report_of(objects_after, before={report})
    assert listed_second == new_keys

    third = await runner.run(export)
    assert third.status == "empty" and third.files == []


async def test_csv_spellings_of_every_type(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources=[table.name],
        format="csv",
        csv_header=False,
        partition_level="date",
        properties={"mode": "include", "names": ["hit_time_utc", "n", "f", "ok", "day", "tags", "text"]},
        destination=s3_destination(s3_server, bucket).model_dump(),
    )
    await table.insert(
        [
            {
                "hit_time_utc": "2024-01-05T10:00:00.250Z",
                "n": 7,
                "f": 2.5,
                "ok": True,
                "day": "2024-01-05",
                "tags": {"a": [1, "x"]},
                "text": 'say "hi",\nthen go',
            },
            {"hit_time_utc": "2024-01-05T10:00:00Z", "n": None, "ok": False, "text": ""},
        ]
    )
    await runner.run(export)
    objects = await s3_objects(s3_server, bucket)
    (key,) = data_keys(objects)
    text = gunzip(objects[key]).decode()
    rows = list(csv.reader(io.StringIO(text)))
    # No header; the columns come in the model's order: day, f, hit_time_utc, n, ok, tags, text.
    assert rows[0][:5] == ["2024-01-05", "2.5", "2024-01-05T10:00:00.250000Z", "7", "true"]
    assert orjson.loads(rows[0][5]) == {"a": [1, "x"]} and rows[0][6] == 'say "hi",\nthen go'
    assert rows[1] == ["", "", "2024-01-05T10:00:00Z", "", "false", "", ""]
    assert text.splitlines()[-1].endswith(',false,,""')  # a null is an empty cell, empty text is quoted


async def test_ndjson_quarter_hours_privacy_filter_and_exclude_list(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources=[table.name],
        format="ndjson",
        partition_level="quarter-hour",
        privacy_filter=True,
        properties={"mode": "exclude", "names": ["secret", "_received_at"]},
        destination=s3_destination(s3_server, bucket, folder="").model_dump(),
    )
    await table.insert(
        [
            {"hit_time_utc": "2021-10-31T09:50:00Z", "n": 1, "visitor_privacy_consent": True, "secret": "s"},
            {"hit_time_utc": "2021-10-31T09:51:00Z", "n": 2, "visitor_privacy_consent": False, "secret": "s"},
            {"hit_time_utc": "2021-10-31T10:05:00Z", "n": 3, "visitor_privacy_consent": None, "note": 'é\t"q"'},
        ]
    )
    other = await create_export(
        store,
        sources=[table.name],
        format="ndjson",
        privacy_filter=True,
        destination=s3_destination(s3_server, bucket, folder="text").model_dump(),
    )
    result = await runner.run(export)
    assert result.rows == 2 and result.dropped_privacy == 1
    objects = await s3_objects(s3_server, bucket)
    keys = [k for k in data_keys(objects) if k.startswith(export.name)]
    pattern = re.compile(
        rf"{export.name}/data/date=2021-10-31/hour=(09/min=45-60|10/min=00-15)/data_{GUID}_001_0_0\.json\.gz"
    )
    assert len(keys) == 2 and all(pattern.fullmatch(k) for k in keys), keys
    lines = [orjson.loads(line) for k in keys for line in gunzip(objects[k]).splitlines()]
    assert sorted(line["n"] for line in lines) == [1, 3]
    for line in lines:
        assert "secret" not in line and "_received_at" not in line and "_source_offset" not in line
        assert None not in line.values()  # NDJSON leaves null properties out of the line
    third = next(line for line in lines if line["n"] == 3)
    assert "visitor_privacy_consent" not in third and third["note"] == 'é\t"q"'
    assert third["hit_time_utc"] == "2021-10-31T10:05:00Z" and third["_storage"] == table.name

    # A consent held as text (the column widened to string) refuses with "false", whatever its case.
    await table.insert([{"n": 4, "visitor_privacy_consent": " FALSE"}, {"n": 5, "visitor_privacy_consent": "yes"}])
    result = await runner.run(other)
    assert result.rows == 3 and result.dropped_privacy == 2


async def test_parquet_include_list_several_files_per_interval(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources=[table.name],
        format="parquet",
        partition_level="date",
        max_rows_per_file=2,
        properties={"mode": "include", "names": ["hit_time_utc", "n", "price", "tags"]},
        destination=s3_destination(s3_server, bucket).model_dump(),
    )
    rows = [
        {"hit_time_utc": f"2021-04-08T0{i}:00:00Z", "n": i, "price": 1.5 * i, "tags": ["a", i], "other": "x"}
        for i in range(5)
    ]
    await table.insert(rows)
    result = await runner.run(export)
    assert result.rows == 5
    objects = await s3_objects(s3_server, bucket)
    keys = data_keys(objects)
    numbers = sorted(re.fullmatch(rf".*/date=2021-04-08/data_{GUID}_(\d{{3}})_0_0\.parquet", k)[1] for k in keys)
    assert numbers == ["001", "002", "003"]
    assert len({re.search(GUID, k)[0] for k in keys}) == 1  # one interval, one guid, numbered files
    files = [pq.ParquetFile(io.BytesIO(objects[k])) for k in keys]  # Parquet as is: no gzip around it
    assert {f.metadata.row_group(0).column(0).compression for f in files} == {"GZIP"}
    tables = [f.read() for f in files]
    assert all(t.column_names == ["hit_time_utc", "n", "price", "tags"] for t in tables)
    assert [str(t) for t in tables[0].schema.types] == ["timestamp[us, tz=UTC]", "int64", "double", "string"]
    read_back = sorted((r for t in tables for r in t.to_pylist()), key=lambda r: r["n"])
    assert [r["n"] for r in read_back] == [0, 1, 2, 3, 4]
    assert read_back[2]["price"] == 3.0 and orjson.loads(read_back[2]["tags"]) == ["a", 2]


async def test_parquet_compression_option(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    for codec in ("zstd", "snappy"):
        export = await create_export(
            store,
            sources=[table.name],
            format="parquet",
            parquet_compression=codec,
            destination=s3_destination(s3_server, bucket, folder=codec).model_dump(),
        )
        await table.insert([{"hit_time_utc": "2021-04-08T10:00:00Z", "codec": codec}])
        await runner.run(export)
    objects = await s3_objects(s3_server, bucket)
    for codec in ("zstd", "snappy"):
        (key,) = [k for k in data_keys(objects) if k.startswith(f"{codec}/")]
        assert pq.ParquetFile(io.BytesIO(objects[key])).metadata.row_group(0).column(0).compression == codec.upper()


async def test_destination_failing_mid_run_writes_no_report_and_the_retry_rewrites_the_same_files(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    destination = s3_destination(s3_server, bucket)
    export = await create_export(
        store,
        sources=[table.name],
        format="csv",
        max_rows_per_file=2,
        destination=destination.model_dump(),
    )
    await table.insert([{"hit_time_utc": "2021-04-08T10:00:00Z", "n": i} for i in range(4)])
    await table.insert([{"hit_time_utc": "2021-04-08T11:00:00Z", "n": i} for i in range(4, 7)])

    # The last file (11:00, _002) fails once the three others are delivered.
    failing = RecordingDestination(
        open_destination(destination, runner.settings, runner.pool), fail_on=r"hour=11/.*_002_0_0", fail_after=3
    )
    with pytest.raises(RunFailed, match="injected failure"):
        await runner.run(export, destination=failing)
    objects = await s3_objects(s3_server, bucket)
    assert not [k for k in objects if k.endswith((".report", ".manifest.json"))]
    partial = {k: objects[k] for k in data_keys(objects)}
    assert len(partial) == 3

    # Rows inserted after the failure wait for the run after the retry: the retry replays the same range.
    await table.insert([{"hit_time_utc": "2021-04-08T12:00:00Z", "n": 7}])
    retried = await runner.run(export)
    assert retried.status == "succeeded" and retried.rows == 7
    objects = await s3_objects(s3_server, bucket)
    report, listed = report_of(objects)
    assert set(partial) <= set(listed)  # the same names were rewritten, not new ones beside them
    assert all(objects[k] == body for k, body in partial.items())  # with exactly the same rows, byte for byte
    assert sorted(data_keys(objects)) == sorted(listed)
    seen = [int(r["n"]) for name in listed for r in read_csv(objects[name])]
    assert sorted(seen) == list(range(7))

    after = await runner.run(export)
    objects = await s3_objects(s3_server, bucket)
    _, listed_after = report_of(objects, before={report})
    assert after.rows == 1 and [int(r["n"]) for r in read_csv(objects[listed_after[0]])] == [7]
    runs = await store.runs(export)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded", "failed"]


async def test_missing_bucket_fails_the_run_and_the_retry_delivers_the_same_names(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3
) -> None:
    import uuid

    from tests.conftest import s3_client

    bucket = f"later-{uuid.uuid4().hex[:10]}"
    export = await create_export(
        store, sources=[table.name], destination=s3_destination(s3_server, bucket).model_dump()
    )
    await table.insert(SEED_ROWS)
    with pytest.raises(RunFailed, match="NoSuchBucket"):
        await runner.run(export)
    failed = (await store.runs(export))[0]
    assert failed["status"] == "failed" and failed["report"] is None
    async with s3_client(s3_server) as client:
        await client.create_bucket(Bucket=bucket)
    retried = await runner.run(export)
    assert retried.status == "succeeded" and retried.rows == 4
    objects = await s3_objects(s3_server, bucket)
    _, listed = report_of(objects)
    assert sorted(listed) == data_keys(objects) and len(listed) == 2


async def test_fields_past_a_full_model_go_out_as_one_json_property(
    settings: Settings, pool: asyncpg.Pool, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store, sources=[table.name], format="ndjson", destination=s3_destination(s3_server, bucket).model_dump()
    )
    await table.insert([{"a": 1, "b": 2}])
    # As transform writes them once the model is full: fields without a column in _overflow (a null-only one too).
    overflow = {"c": 3, "gone": None}
    await pool.execute(f"UPDATE {table.storage.qualified_table} SET _overflow = $1", overflow)
    full = SettlingRunner(settings.model_copy(update={"max_columns": 2}), pool)
    await full.run(export)
    objects = await s3_objects(s3_server, bucket)
    (line,) = [orjson.loads(x) for k in data_keys(objects) for x in gunzip(objects[k]).splitlines()]
    assert line["a"] == 1 and line["_overflow"] == {"c": 3}  # a JSON value, like a json column
