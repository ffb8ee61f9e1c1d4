"""Live export runs to a real S3 API server: the seed's paths, gzip files, formats, filters, reports, late rows."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from exporter.definitions import ExportStore
from exporter.destinations import DeliveryFailed, Destination
from exporter.destinations.s3 import S3
from exporter.runs import ExportRunner, RunFailed
from headrace.platform.scratch import ScratchS3
from tests.exporter.conftest import RowsTopic, create_export, gunzip, s3_destination, s3_objects

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
    """The real S3 destination, noting the order names were delivered in (and failing on demand)."""

    def __init__(self, inner: S3, fail_at_file: int | None = None) -> None:
        self.inner = inner
        self.fail_at_file = fail_at_file
        self.order: list[str] = []

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def put_file(self, local: Path, name: str) -> None:
        if self.fail_at_file is not None and len(self.order) + 1 == self.fail_at_file:
            raise DeliveryFailed(f"injected failure delivering {name}")
        await self.inner.put_file(local, name)
        self.order.append(name)

    async def put_bytes(self, data: bytes, name: str) -> None:
        await self.inner.put_bytes(data, name)
        self.order.append(name)


async def test_csv_hours_report_and_late_rows(
    runner: ExportRunner, store: ExportStore, rows_topic: RowsTopic, s3_server: ScratchS3, bucket: str
) -> None:
    destination = s3_destination(s3_server, bucket)
    export = await create_export(
        store,
        sources=[rows_topic.name],
        format="csv",
        csv_separator=";",
        partition_level="hour",
        destination=destination.model_dump(),
    )
    await rows_topic.send(SEED_ROWS[:2], partition=0)
    await rows_topic.send(SEED_ROWS[2:], partition=1)
    await rows_topic.send([{"hit_time_utc": "not a time", "event_id": 1, "page": "x"}, {"event_id": 2}], partition=1)

    recorder = RecordingDestination(S3(destination))
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

    by_interval = {interval_of_key(k): read_csv(objects[k], ";") for k in keys}
    assert [r["event_id"] for r in by_interval["hour=10"]] == ["192746238290", "192746857489"]
    assert [(r["event_id"], r["page"]) for r in by_interval["hour=11"]] == [
        ("387362092413", "pay;now"),
        ("238290192746", ""),
    ]
    assert {r["event_id"] for r in by_interval["date=unknown"]} == {"1", "2"}
    assert by_interval["hour=10"][0]["_storage"] == rows_topic.name

    # A row inserted late, for 11:xx, goes out with the next run as a new file in the old interval.
    await rows_topic.send([{"hit_time_utc": "2021-04-08T11:30:00Z", "event_id": 99, "page": "late"}], partition=0)
    second = await runner.run(export)
    assert second.status == "succeeded" and second.rows == 1
    objects_after = await s3_objects(s3_server, bucket)
    new_keys = sorted(set(data_keys(objects_after)) - set(keys))
    assert len(new_keys) == 1 and "/date=2021-04-08/hour=11/" in new_keys[0]
    _, listed_second = report_of(objects_after, before={report})
    assert listed_second == new_keys

    third = await runner.run(export)
    assert third.status == "empty" and third.files == []


async def test_ndjson_quarter_hours_privacy_filter_and_exclude_list(
    runner: ExportRunner, store: ExportStore, rows_topic: RowsTopic, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources=[rows_topic.name],
        format="ndjson",
        partition_level="quarter-hour",
        privacy_filter=True,
        properties={"mode": "exclude", "names": ["secret", "_received_at"]},
        destination=s3_destination(s3_server, bucket, folder="").model_dump(),
    )
    await rows_topic.send(
        [
            {"hit_time_utc": "2021-10-31T09:50:00Z", "n": 1, "visitor_privacy_consent": True, "secret": "s"},
            {"hit_time_utc": "2021-10-31T09:51:00Z", "n": 2, "visitor_privacy_consent": False, "secret": "s"},
            {"hit_time_utc": "2021-10-31T10:05:00Z", "n": 3, "visitor_privacy_consent": None, "note": None},
            {"hit_time_utc": "2021-10-31T10:06:00Z", "n": 4, "visitor_privacy_consent": "false"},
        ]
    )
    result = await runner.run(export)
    assert result.rows == 2 and result.dropped_privacy == 2
    objects = await s3_objects(s3_server, bucket)
    keys = data_keys(objects)
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
    assert "note" not in third and "visitor_privacy_consent" not in third


async def test_parquet_include_list_several_files_per_interval_and_duplicates(
    runner: ExportRunner, store: ExportStore, rows_topic: RowsTopic, s3_server: ScratchS3, bucket: str
) -> None:
    export = await create_export(
        store,
        sources=[rows_topic.name],
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
    await rows_topic.send(rows)
    await rows_topic.send(rows[-1:], repeat_last=True)  # transform republished its last row after a crash
    result = await runner.run(export)
    assert result.rows == 5 and result.duplicates == 1
    objects = await s3_objects(s3_server, bucket)
    keys = data_keys(objects)
    numbers = sorted(re.fullmatch(rf".*/date=2021-04-08/data_{GUID}_(\d{{3}})_0_0\.parquet\.gz", k)[1] for k in keys)
    assert numbers == ["001", "002", "003"]
    assert len({re.search(GUID, k)[0] for k in keys}) == 1  # one interval, one guid, numbered files
    tables = [pq.read_table(io.BytesIO(gunzip(objects[k]))) for k in keys]
    assert all(t.column_names == ["hit_time_utc", "n", "price", "tags"] for t in tables)
    read_back = sorted((r for t in tables for r in t.to_pylist()), key=lambda r: r["n"])
    assert [r["n"] for r in read_back] == [0, 1, 2, 3, 4]
    assert read_back[2]["price"] == 3.0 and orjson.loads(read_back[2]["tags"]) == ["a", 2]


async def test_destination_failing_mid_run_writes_no_report_and_next_run_delivers_every_row_once(
    runner: ExportRunner, store: ExportStore, rows_topic: RowsTopic, s3_server: ScratchS3, bucket: str
) -> None:
    destination = s3_destination(s3_server, bucket)
    export = await create_export(
        store,
        sources=[rows_topic.name],
        format="csv",
        max_rows_per_file=2,
        destination=destination.model_dump(),
    )
    await rows_topic.send([{"hit_time_utc": "2021-04-08T10:00:00Z", "n": i} for i in range(4)], partition=0)
    await rows_topic.send([{"hit_time_utc": "2021-04-08T11:00:00Z", "n": i} for i in range(4, 7)], partition=1)

    failing = RecordingDestination(S3(destination), fail_at_file=3)
    with pytest.raises(RunFailed, match="injected failure"):
        await runner.run(export, destination=failing)
    objects = await s3_objects(s3_server, bucket)
    assert not [k for k in objects if k.endswith((".report", ".manifest.json"))]
    partial = set(data_keys(objects))
    assert len(partial) == 2

    # Rows inserted after the failure wait for the run after the retry: the retry replays the same range.
    await rows_topic.send([{"hit_time_utc": "2021-04-08T12:00:00Z", "n": 7}], partition=0)
    retried = await runner.run(export)
    assert retried.status == "succeeded" and retried.rows == 7
    objects = await s3_objects(s3_server, bucket)
    report, listed = report_of(objects)
    assert partial <= set(listed)  # the same names were rewritten, not new ones beside them
    seen = [int(r["n"]) for name in listed for r in read_csv(objects[name])]
    assert sorted(seen) == list(range(7))

    after = await runner.run(export)
    objects = await s3_objects(s3_server, bucket)
    _, listed_after = report_of(objects, before={report})
    assert after.rows == 1 and [int(r["n"]) for r in read_csv(objects[listed_after[0]])] == [7]
    runs = await store.runs(export)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded", "failed"]
