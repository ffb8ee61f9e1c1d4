"""SFTP delivery against a real OpenSSH server, and history regeneration from the storages' tables."""

from __future__ import annotations

import re
import shutil

import orjson
import pytest

from exporter.definitions import ExportStore
from exporter.partitioning import parse_period
from exporter.runs import ExportRunner, RunFailed
from headrace.platform.scratch import ScratchS3
from tests.exporter.conftest import StorageTable, create_export, gunzip, s3_destination, s3_objects
from tests.exporter.test_s3_runs import GUID, SEED_ROWS, data_keys
from tests.file_servers import FileServer


async def test_file_server_names_carry_the_interval_and_report_lists_the_files(
    runner: ExportRunner, store: ExportStore, table: StorageTable, file_server: FileServer
) -> None:
    """SFTP, FTP and FTPS alike: the seed's names (no folder is created), temporary names renamed, the report last."""
    folder = file_server.root / f"myFolder-{table.name}"
    folder.mkdir()
    export = await create_export(
        store,
        sources=[table.name],
        format="csv",
        partition_level="hour",
        destination=file_server.fields() | {"folder": file_server.remote(folder)},
    )
    assert export.to_json()["destination"]["private_key" if file_server.kind == "sftp" else "password"] == "***"
    await table.insert([*SEED_ROWS, {"hit_time_utc": None, "event_id": 5}])
    # The folder is gone: the upload fails, no report is written, and the horizon stays where it was.
    shutil.rmtree(folder)
    with pytest.raises(RunFailed, match=f"{file_server.kind}://") as failed:
        await runner.run(export)
    assert file_server.secret not in str(failed.value)
    folder.mkdir()
    result = await runner.run(export)
    assert result.rows == 5
    names = sorted(p.name for p in folder.iterdir())
    data = [n for n in names if "_data_" in n]
    pattern = re.compile(rf"{export.name}_(2021-04-08_(10|11)|unknown)_data_{GUID}_001_0_0\.csv\.gz")
    assert len(data) == 3 and all(pattern.fullmatch(n) for n in data), names
    assert not [n for n in names if n.endswith(".part")]  # temporary names were renamed into place
    reports = [n for n in names if n.endswith("_delivery.report")]
    assert len(reports) == 1
    listed = (folder / reports[0]).read_text().splitlines()
    assert sorted(listed) == sorted(file_server.remote(folder / n) for n in data)
    lines = gunzip((folder / next(n for n in data if "_10_data_" in n)).read_bytes()).decode().splitlines()
    assert lines[0].startswith('"_storage","_event_id","_received_at","_inserted_at"') and len(lines) == 3
    assert lines[1].startswith(f'"{table.name}",')


async def test_regenerated_period_holds_the_same_rows_as_the_live_files(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    rows = [dict(r, _event_id=f"e{i}") for i, r in enumerate(SEED_ROWS)]
    rows.append({"_event_id": "e9", "hit_time_utc": "2021-04-09T08:00:00Z", "event_id": 9, "page": "next day"})
    await table.insert(rows)
    export = await create_export(
        store,
        sources=[table.name],
        format="ndjson",
        partition_level="hour",
        destination=s3_destination(s3_server, bucket).model_dump(),
    )
    live = await runner.run(export)
    assert live.rows == 5
    start, end = parse_period("2021-04-08", "2021-04-08")
    regenerated = await runner.regenerate(export, start, end, "history")
    assert regenerated.rows == 4
    objects = await s3_objects(s3_server, bucket)

    def rows_by_interval(prefix: str) -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for key in data_keys(objects):
            if key.startswith(prefix) and "date=2021-04-08" in key:
                interval = key.split("/data/")[1].rsplit("/", 1)[0]
                found.setdefault(interval, []).extend(orjson.loads(x) for x in gunzip(objects[key]).splitlines())
        return {k: sorted(v, key=lambda r: r["_event_id"]) for k, v in found.items()}

    assert rows_by_interval(f"history/{export.name}/") == rows_by_interval(f"myFolder/{export.name}/")
    assert set(rows_by_interval("history/")) == {"date=2021-04-08/hour=10", "date=2021-04-08/hour=11"}
    report = [k for k in objects if k.startswith("history/") and k.endswith("_delivery.report")]
    assert len(report) == 1
    assert sorted(objects[report[0]].decode().splitlines()) == sorted(
        k for k in data_keys(objects) if k.startswith("history/")
    )
    # The horizon did not move back: a live run now has nothing new.
    assert (await runner.run(export)).status == "empty"


async def test_regeneration_filters_epoch_event_times_after_reading(
    runner: ExportRunner, store: ExportStore, table: StorageTable, s3_server: ScratchS3, bucket: str
) -> None:
    # Epoch milliseconds (an integer column) do not narrow the scan in Postgres: the period is applied after reading.
    await table.insert([{"hit_time_utc": 1617879494000 + i * 3_600_000, "n": i} for i in range(48)])
    await table.insert([{"n": 99}])
    export = await create_export(
        store, sources=[table.name], format="csv", destination=s3_destination(s3_server, bucket).model_dump()
    )
    start, end = parse_period("2021-04-09", "2021-04-09")
    result = await runner.regenerate(export, start, end, "again")
    assert result.rows == 24 and result.unknown_time == 0
    objects = await s3_objects(s3_server, bucket)
    hours = {k.split("/data/")[1].split("/data_")[0] for k in data_keys(objects)}
    assert hours == {f"date=2021-04-09/hour={h:02d}" for h in range(24)}
