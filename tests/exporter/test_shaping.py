"""Column-wise shaping and spelling against the row-wise rules they replace (no servers)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.partitioning import interval_at, interval_of, parse_event_time
from exporter.shaping import UNKNOWN_ID, event_moments, group_by_interval, interval_ids, kept_by_consent
from headrace.formats.text import iso_text, json_lines
from headrace.models.types import ColumnType

TEXTS = [
    "2021-04-08T10:58:14Z",
    "2021-04-08T12:58:14+02:00",
    "2021-04-08 10:58:14",
    "2021-04-08",
    "08/04/2021",
    "",
    None,
    "9999-12-31T23:59:59Z",
]
NUMBERS = [1617879494, 1617879494000, 0, -1, 99_999_999_999, 100_000_000_000, 10**18, -(10**14), None]


@pytest.mark.parametrize(("values", "column_type"), [(TEXTS, ColumnType.STRING), (NUMBERS, ColumnType.INTEGER)])
def test_event_times_mean_what_parse_event_time_says(values: list, column_type: ColumnType) -> None:
    moments = event_moments(pa.array(values), column_type).to_pylist()
    assert moments == [parse_event_time(v) for v in values]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=20))
def test_epoch_floats_mean_what_parse_event_time_says(values: list[float]) -> None:
    moments = event_moments(pa.array(values, pa.float64()), ColumnType.FLOAT).to_pylist()
    expected = [parse_event_time(v) for v in values]
    # Both round to the microsecond; float rounding differs (Python divides milliseconds by 1000 first), by at most
    # a double's spacing at year 9999 in microseconds (32 µs): nothing a minute-wide interval could notice.
    for got, want in zip(moments, expected, strict=True):
        assert (got is None) == (want is None) and (got is None or abs((got - want).total_seconds()) <= 64e-6)


@pytest.mark.parametrize("level", ["date", "hour", "half-hour", "quarter-hour"])
def test_interval_ids_name_the_same_intervals(level: str) -> None:
    moments = [datetime(2021, 4, 8, 10, 58, 14, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, tzinfo=UTC), None]
    ids = interval_ids(pa.array(moments, pa.timestamp("us", "UTC")), level).to_pylist()
    assert ids[2] == UNKNOWN_ID
    assert [interval_at(i, level) for i in ids[:2]] == [interval_of(m, level) for m in moments[:2]]


@given(st.lists(st.datetimes(timezones=st.just(UTC)) | st.none(), max_size=30))
def test_iso_text_is_the_iso_spelling_with_z(moments: list[datetime | None]) -> None:
    def spelled(m: datetime | None) -> str | None:
        if m is None:
            return None
        return m.replace(tzinfo=None).isoformat(timespec="microseconds" if m.microsecond else "seconds") + "Z"

    assert iso_text(pa.array(moments, pa.timestamp("us", "UTC"))).to_pylist() == [spelled(m) for m in moments]


@given(
    st.lists(
        st.tuples(
            st.text() | st.none(),
            st.integers(-(2**63), 2**63 - 1) | st.none(),
            st.floats(allow_nan=False, allow_infinity=False) | st.none(),
            st.booleans() | st.none(),
        ),
        max_size=20,
    )
)
def test_json_lines_read_back_as_the_values(rows: list[tuple]) -> None:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    types = [pa.string(), pa.int64(), pa.float64(), pa.bool_()]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(c, t) for c, t in zip(columns, types, strict=True)], ["s", "i", "f", "b"]
    )
    kinds = [ColumnType.STRING, ColumnType.INTEGER, ColumnType.FLOAT, ColumnType.BOOLEAN]
    lines = json_lines(batch, kinds).to_pylist()
    for line, row in zip(lines, rows, strict=True):
        assert line.endswith("\n")
        expected = {k: v for k, v in zip("sifb", row, strict=True) if v is not None}
        assert orjson.loads(line) == expected


def test_json_lines_spell_dates_datetimes_and_json() -> None:
    batch = pa.record_batch(
        {
            "t": pa.array([datetime(2024, 1, 5, 10, tzinfo=UTC)], pa.timestamp("us", "UTC")),
            "d": pa.array([date(2024, 1, 5)]),
            "j": pa.array(['{"a": [1, 2]}']),
        }
    )
    line = json_lines(batch, [ColumnType.DATETIME, ColumnType.DATE, ColumnType.JSON]).to_pylist()[0]
    assert orjson.loads(line) == {"t": "2024-01-05T10:00:00Z", "d": "2024-01-05", "j": {"a": [1, 2]}}


def test_consent_false_refuses_and_missing_keeps() -> None:
    assert kept_by_consent(pa.array([True, False, None]), ColumnType.BOOLEAN).to_pylist() == [True, False, True]
    texts = pa.array(["false", " FALSE ", None, "no", "true"])
    assert kept_by_consent(texts, ColumnType.STRING).to_pylist() == [False, False, True, True, True]
    assert kept_by_consent(pa.array([0, 1]), ColumnType.INTEGER) is None


def test_groups_keep_the_batch_order() -> None:
    batch = pa.record_batch({"n": [0, 1, 2, 3, 4]})
    groups = group_by_interval(batch, pa.array([5, 3, 5, UNKNOWN_ID, 3], pa.int64()))
    assert [(i, g.column(0).to_pylist()) for i, g in groups] == [(UNKNOWN_ID, [3]), (3, [1, 4]), (5, [0, 2])]
