"""Partition intervals, file names and event-time parsing, exactly as the seed spells them (no servers)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from exporter.definitions import SECRETS, ExportDefinition
from exporter.partitioning import UNKNOWN, Layout, interval_of, parse_event_time, parse_period
from exporter.scheduler import next_boundary, slot_of

GUID = uuid.UUID("019ac5aa-3252-4738-0000-03d5ba4052ba")
MOMENT = datetime(2021, 4, 8, 10, 58, 14, tzinfo=UTC)


@pytest.mark.parametrize(
    ("level", "s3", "sftp"),
    [
        ("date", "date=2021-04-08/data_", "myExport_2021-04-08_data_"),
        ("hour", "date=2021-04-08/hour=10/data_", "myExport_2021-04-08_10_data_"),
        ("half-hour", "date=2021-04-08/hour=10/min=30-60/data_", "myExport_2021-04-08_10_30-60_data_"),
        ("quarter-hour", "date=2021-04-08/hour=10/min=45-60/data_", "myExport_2021-04-08_10_45-60_data_"),
    ],
)
def test_names_follow_the_seed(level: str, s3: str, sftp: str) -> None:
    interval = interval_of(MOMENT, level)
    leaf = f"{GUID}_001_0_0.csv.gz"
    assert Layout("s3", "myFolder", "myExport").data_file(interval, GUID, 1, "csv.gz") == (
        f"myFolder/myExport/data/{s3}{leaf}"
    )
    assert Layout("sftp", "myFolder", "myExport").data_file(interval, GUID, 1, "csv.gz") == f"myFolder/{sftp}{leaf}"
    # Parquet compresses inside the file: no .gz around it.
    assert Layout("s3", "f", "e").data_file(interval, GUID, 3, "parquet").endswith(f"/{s3}{GUID}_003_0_0.parquet")


def test_unknown_event_time_has_its_own_place() -> None:
    assert (
        Layout("s3", "f", "e").data_file(UNKNOWN, GUID, 2, "json.gz")
        == f"f/e/data/date=unknown/data_{GUID}_002_0_0.json.gz"
    )
    assert (
        Layout("sftp", "/srv/f/", "e").data_file(UNKNOWN, GUID, 2, "json.gz")
        == f"/srv/f/e_unknown_data_{GUID}_002_0_0.json.gz"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-04-08T10:58:14Z", MOMENT),
        ("2021-04-08T12:58:14+02:00", MOMENT),
        ("2021-04-08 10:58:14", MOMENT),
        (1617879494, MOMENT),
        (1617879494000, MOMENT),
        ("2021-04-08", datetime(2021, 4, 8, tzinfo=UTC)),
        ("08/04/2021", None),
        ("", None),
        (None, None),
        (True, None),
        ({"a": 1}, None),
    ],
)
def test_event_time_parsing(value: object, expected: datetime | None) -> None:
    assert parse_event_time(value) == expected


def test_regeneration_period_includes_the_last_day() -> None:
    assert parse_period("2021-04-01", "2021-04-08") == (
        datetime(2021, 4, 1, tzinfo=UTC),
        datetime(2021, 4, 9, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="ends before"):
        parse_period("2021-04-08T10:00:00Z", "2021-04-08T09:00:00Z")


def test_boundaries_are_utc_aligned() -> None:
    assert next_boundary(MOMENT, 15) == datetime(2021, 4, 8, 11, 0, tzinfo=UTC)
    assert next_boundary(MOMENT, 60) == datetime(2021, 4, 8, 11, 0, tzinfo=UTC)
    assert slot_of(datetime(2021, 4, 8, 10, 14, 59, tzinfo=UTC), 15) + 1 == slot_of(
        datetime(2021, 4, 8, 10, 15, tzinfo=UTC), 15
    )


def test_secrets_never_show() -> None:
    definition = ExportDefinition.model_validate(
        {
            "name": "e",
            "sources": ["s"],
            "destination": {"kind": "sftp", "host": "h", "user": "u", "password": "hunter2", "private_key": "KEY"},
        }
    )
    shown = SECRETS.mask(definition.model_dump(mode="json"))
    assert shown["destination"]["password"] == "***" and shown["destination"]["private_key"] == "***"
    assert "hunter2" not in str(shown)


@pytest.mark.parametrize(
    "bad",
    [
        {"frequency_minutes": 20},
        {"csv_separator": ";;"},
        {"partition_level": "minute"},
        {"sources": []},
        {"properties": {"mode": "include"}},
        {"destination": {"kind": "sftp", "host": "h", "user": "u"}},
    ],
)
def test_invalid_definitions_are_refused(bad: dict) -> None:
    base = {"name": "e", "sources": ["s"], "destination": {"kind": "s3", "bucket": "bucket"}}
    with pytest.raises(ValueError):
        ExportDefinition.model_validate(base | bad)
