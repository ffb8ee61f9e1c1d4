"""The fast path's column building without servers: what it accepts it converts as the row path does, and it hands
the row path every poll that would need a model change, a reject, a dead letter or a header it does not read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.catalog import Storage
from headrace.etl import EtlConfig
from headrace.events import EVENT_ID_HEADER, OP_FIELD, RECEIVED_AT_HEADER, batch_headers, event_headers
from headrace.models import Model
from transform import columnar
from transform.events import decode_message
from transform.planning import plan_events, row_tuples

NOW = datetime(2024, 1, 5, 10, tzinfo=UTC)
MODEL = Model.from_json(
    [
        {"key": "i", "name": "i", "type": "integer"},
        {"key": "f", "name": "f", "type": "float"},
        {"key": "b", "name": "b", "type": "boolean"},
        {"key": "d", "name": "d", "type": "date"},
        {"key": "ts", "name": "ts", "type": "datetime"},
        {"key": "s", "name": "s", "type": "string"},
        {"key": "j", "name": "j", "type": "json"},
    ],
    4,
    1000,
)
STORAGE = Storage(uuid.uuid4(), "s", "s", (), "append", False, MODEL.version)
MERGED = Storage(uuid.uuid4(), "m", "m", ("i",), "merge", False, MODEL.version)


def message(value: bytes | None, offset: int = 0, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return SimpleNamespace(
        topic="t",
        partition=offset % 3,
        offset=offset,
        key=None,
        value=value,
        headers=headers if headers is not None else event_headers(None, 1_700_000_000_000 + offset),
        timestamp=1_700_000_000_000,
    )


class NoAvro:
    async def decode(self, value: bytes) -> dict[str, Any]:
        raise AssertionError("no Avro here")


async def row_path(model: Model, messages: list[Any], storage: Storage = STORAGE) -> list[tuple[Any, ...]] | None:
    """The row path's tuples for these messages (a merge's before it keeps the last of each key), or None if it
    would do anything but write them as they are: change the model, reject, delete, dead-letter."""
    events = []
    for msg in messages:
        event, _ = await decode_message(storage, msg, NoAvro())  # type: ignore[arg-type]
        if event is None:
            return None  # a dead letter
        events.append(event)
    plan = plan_events(storage, model, EtlConfig.from_json(None), events)
    change, misfits = model.plan(plan.records)
    if change or misfits or plan.rejected or plan.deletes or any(r.keys() - model.by_key.keys() for r in plan.records):
        return None
    if storage.primary_key and any(OP_FIELD in json.loads(m.value) for m in messages):
        return None  # an `_op` other than a delete, taken off the record: the fast path leaves it to the row path
    return row_tuples(model, plan.rows, NOW)


def fast_path(model: Model, messages: list[Any], storage: Storage = STORAGE) -> list[tuple[Any, ...]] | None:
    columns = columnar.decode(model, messages, storage.primary_key)
    return None if columns is None else list(columns.records(NOW))


async def test_a_poll_that_fits_is_written_as_the_row_path_writes_it() -> None:
    records = [
        {"i": -(2**63), "f": 3, "b": True, "d": "2024-02-29", "ts": "2024-02-29 10:00:00.1234567+01:30", "s": 7},
        {"i": 2**63 - 1, "f": 0.1, "b": None, "d": None, "ts": "2024-03-01", "s": {"x": [1]}, "j": [1, {"a": None}]},
        {"s": "ünïcode ✓", "j": {}},
    ]
    messages = [message(orjson.dumps(r), i) for i, r in enumerate(records)]
    expected = await row_path(MODEL, messages)
    assert expected is not None and fast_path(MODEL, messages) == expected
    assert expected[0][6:9] == (-(2**63), 3.0, True)


async def test_named_events_keep_their_id_and_are_identified() -> None:
    columns = columnar.decode(MODEL, [message(b'{"i": 1}', 5, event_headers("e-1", 1)), message(b'{"i": 2}', 6)])
    assert columns is not None
    assert columns.event_ids == ["e-1", "t:0:6"] and columns.identified == [True, False]
    kept = columns.keep([False, True])
    assert kept.offsets == [6] and kept.values[0] == [2]


async def test_what_the_row_path_would_change_reject_or_dead_letter_is_left_to_it() -> None:
    cases = {
        "new field": [b'{"i": 1, "new": 2}'],
        "null new field (overflow)": [b'{"new": null}'],
        "integer past 64 bits": [b'{"i": 9223372036854775808}'],
        "float in an integer column": [b'{"i": 1.0}'],
        "boolean in an integer column": [b'{"i": true}'],
        "text in a date column": [b'{"d": "2024-02-30"}'],
        "datetime in a date column": [b'{"d": "2024-02-01T10:00:00Z"}'],
        "number in a datetime column": [b'{"ts": 5}'],
        "text in a json column": [b'{"j": "x"}'],
        "not an object": [b"[1]"],
        "not JSON": [b"{"],
        "a tombstone": [None],
        "Avro": [b"\x00\x00\x00\x00\x01\x02"],
    }
    for name, raw in cases.items():
        messages = [message(v, i) for i, v in enumerate(raw)]
        assert columnar.decode(MODEL, messages) is None, name
    batch = [message(b'{"i": 1}', 0, [*batch_headers("b"), *event_headers("e", 1)])]
    assert columnar.decode(MODEL, batch) is None
    assert columnar.decode(MODEL, [message(b'{"i": 1}', 0, [("traceparent", b"x")])]) is None
    assert columnar.decode(Model(), [message(b"{}")]) is None  # no model yet: the first poll creates it


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([-(2**63), 2**63 - 1, 2**63, -(2**63) - 1, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.dates().map(str),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["2024-01-01T00:00:00.123456789Z", "2024-01-01 10:00", "2024-01-01T10:00:00+0530"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner))
EDGE_INTEGERS = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([-(2**63), 2**63 - 1, 0])
DATES = st.dates().map(str)
DATETIMES = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | st.sampled_from(
    ["2024-01-01T00:00:00.123456789Z", "2024-01-01 10:00", "2024-01-01T10:00:00+0530", "2024-01-01T10:00:00-00:00"]
)
# Values that mostly fit their column as it is (so the fast path has work), now and then any JSON value at all.
FITTING = {
    "i": EDGE_INTEGERS,
    "f": st.floats(allow_nan=False, allow_infinity=False) | EDGE_INTEGERS,
    "b": st.booleans(),
    "d": DATES,
    "ts": DATETIMES | DATES,
    "s": st.text(max_size=8) | VALUES,
    "j": st.lists(VALUES, max_size=3) | st.dictionaries(st.text(max_size=3), VALUES, max_size=3),
}
FIELDS = {key: st.none() | fitting | fitting | fitting | VALUES for key, fitting in FITTING.items()}
RECORDS = st.fixed_dictionaries({}, optional={**FIELDS, "extra": VALUES})


USUAL_HEADERS = [
    event_headers(None, 1_700_000_000_000),
    event_headers(None, 1_700_000_000_999),
    event_headers("e-1", 1_700_000_000_000),
    event_headers("é-2", 5),
    [],
]
HEADERS = st.sampled_from(
    [
        *USUAL_HEADERS,
        [(EVENT_ID_HEADER, b"")],
        [(EVENT_ID_HEADER, b"\xff-invalid-utf-8")],
        [(EVENT_ID_HEADER, b"x"), (EVENT_ID_HEADER, b"y")],
        [(RECEIVED_AT_HEADER, b"not a number")],
        [(RECEIVED_AT_HEADER, b" 12 ")],
        [(RECEIVED_AT_HEADER, b"1_000")],
        [(RECEIVED_AT_HEADER, None)],
    ]
)


# Merge events: keys that repeat, now and then missing, null or of another type; now and then an `_op`.
MERGE_RECORDS = st.builds(
    lambda record, key, op: record | {"i": key} | ({OP_FIELD: op} if op else {}),
    RECORDS,
    st.integers(0, 3) | FIELDS["i"],
    st.sampled_from([None, None, None, None, "d", "u"]),
)


@pytest.mark.parametrize("storage", [STORAGE, MERGED], ids=["append", "merge"])
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_the_fast_path_writes_as_the_row_path_and_takes_every_usual_poll_that_fits(
    storage: Storage, data: st.DataObject
) -> None:
    records = data.draw(st.lists(MERGE_RECORDS if storage.primary_key else RECORDS, min_size=1, max_size=6))
    headers = data.draw(st.lists(HEADERS, min_size=1, max_size=6))
    uniform = data.draw(st.booleans())
    # The standard library writes integers of any size (orjson stops at 64 bits) and escapes lone surrogates.
    # Half the polls have one header layout for every event (read column by column), the others mix them.
    layouts = [headers[0] if uniform else headers[i % len(headers)] for i in range(len(records))]
    messages = [message(json.dumps(r).encode(), i, h) for i, (r, h) in enumerate(zip(records, layouts, strict=True))]
    fast, row = fast_path(MODEL, messages, storage), await row_path(MODEL, messages, storage)
    if fast is not None or all(h in USUAL_HEADERS for h in layouts):
        # Headers it does not read (empty ids, bad receive times) may send a poll the row way; nothing else does.
        assert fast == row
