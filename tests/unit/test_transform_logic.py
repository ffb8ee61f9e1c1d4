"""Transform's pure logic without servers: decoding messages into events, planning a write, building row tuples."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from headrace.catalog import Storage
from headrace.etl import EtlConfig
from headrace.events import batch_end_headers, batch_headers, event_headers, event_key
from headrace.models import Model
from transform.events import Event, decode_message
from transform.planning import plan_events, row_tuples

NOW = datetime(2024, 1, 5, 10, tzinfo=UTC)
MODEL = Model.from_json(
    [
        {"key": "id", "name": "id", "type": "integer"},
        {"key": "day", "name": "day", "type": "date"},
        {"key": "v", "name": "v", "type": "string"},
    ],
    3,
    1000,
)


def storage(load_mode: str = "append", primary_key: tuple[str, ...] = ()) -> Storage:
    return Storage(uuid.uuid4(), "s", "s", primary_key, load_mode, False, MODEL.version)


def message(value: bytes | None, headers: list[tuple[str, bytes]] | None = None, key: bytes | None = None) -> Any:
    return SimpleNamespace(
        topic="t", partition=2, offset=7, key=key, value=value, headers=headers or [], timestamp=1_700_000_000_000
    )


class NoAvro:
    async def decode(self, value: bytes) -> dict[str, Any]:
        raise AssertionError("no Avro in these tests")


async def decode(target: Storage, msg: Any) -> tuple[Event | None, str]:
    return await decode_message(target, msg, NoAvro())  # type: ignore[arg-type]


async def test_an_event_without_an_id_header_is_known_by_its_position_and_not_identified() -> None:
    event, _ = await decode(storage(), message(b'{"a": 1}', event_headers(None, 1_700_000_000_000)))
    assert event is not None and event.event_id == "t:2:7" and not event.identified
    named, _ = await decode(storage(), message(b'{"a": 1}', event_headers("e-1", 1_700_000_000_000)))
    assert named is not None and named.event_id == "e-1" and named.identified


async def test_markers_tombstones_and_bad_headers() -> None:
    marker, _ = await decode(storage(), message(b"{}", batch_end_headers("b1", 3, "replace")))
    assert marker is not None and marker.is_marker and (marker.batch_id, marker.batch_rows) == ("b1", 3)
    assert (await decode(storage(), message(None)))[1] == "tombstone on a storage that is not merged"
    merged = storage("merge", ("id",))
    tombstone, _ = await decode(merged, message(None, key=event_key(["id"], {"id": 4})))
    assert tombstone is not None and tombstone.delete and tombstone.record == {"id": 4}
    _, reason = await decode(storage(), message(b"{}", [("hr-load-mode", b"upsert")]))
    assert reason.startswith("bad hr-load-mode")
    delete, _ = await decode(merged, message(orjson.dumps({"id": 1, "_op": "d"})))
    assert delete is not None and delete.delete and delete.record == {"id": 1}


def event(record: dict[str, Any] | None, offset: int = 0, **fields: Any) -> Event:
    return Event(record, f"e{offset}", NOW, 0, offset, **fields)


def test_the_plan_sorts_events_by_what_the_write_does_with_them() -> None:
    merged = storage("merge", ("id",))
    events = [
        event({"id": 1, "v": "a"}, 0),
        event({"v": "no key"}, 1),
        event({"id": {"x": 1}, "v": "object key"}, 2),
        event({"id": "abc"}, 3, delete=True),
        event({"id": 2}, 4, delete=True),
        event({"id": 3, "v": "batched"}, 5, batch_id="b", load_mode="merge"),
        event({"id": 4}, 6, delete=True, batch_id="b", load_mode="merge"),
        event(None, 7, batch_id="b", batch_rows=2, load_mode="merge"),
        event({"id": 5, "v": "forced"}, 8),
    ]
    plan = plan_events(merged, MODEL, EtlConfig.from_json(None), events, forced={8: "write refused: test"})
    assert [e.offset for e, _ in plan.rows] == [0, 5, 6]
    assert [(e.offset, record) for e, record in plan.deletes] == [(4, {"id": 2})]
    assert [(e.offset, reason.split(":")[0]) for e, reason in plan.rejected] == [
        (1, "merge"),
        (2, "merge"),
        (3, "merge delete"),
        (8, "write refused"),
    ]
    assert [m.offset for m in plan.markers] == [7] and plan.batch_modes == {"b": "merge"}
    assert plan.staged_deletes == {(0, 6)}


def test_replace_storages_take_batches_only_and_the_filter_drops_without_rejecting() -> None:
    plan = plan_events(storage("replace"), MODEL, EtlConfig.from_json(None), [event({"v": "x"})])
    assert [reason for _, reason in plan.rejected] == ["replace storage: the event has no hr-batch-id header"]
    etl = EtlConfig.from_json({"filter": "v != 'skip'"})
    plan = plan_events(storage(), MODEL, etl, [event({"v": "skip"}, 0), event({"v": "keep"}, 1)])
    assert [e.offset for e in plan.dropped] == [0] and [e.offset for e, _ in plan.rows] == [1]


def test_row_tuples_convert_values_and_keep_fields_without_a_column_in_overflow() -> None:
    record = {"id": 7, "day": "2024-01-05", "v": 3, "new": [1]}
    [row] = row_tuples(MODEL, [(event(record, 9), record)], NOW)
    assert row[:6] == ("e9", NOW, NOW, {"new": [1]}, 0, 9)
    assert row[6:] == (7, date(2024, 1, 5), "3")


@pytest.mark.parametrize("load_mode", ["append", "merge"])
def test_batch_headers_round_trip(load_mode: str) -> None:
    assert dict(batch_headers("b", load_mode)) == {"hr-batch-id": b"b", "hr-load-mode": load_mode.encode()}
