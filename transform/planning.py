"""Planning one write: the storage's ETL and load-mode rules sort events into rows, deletes, rejects and drops,
and rows become tuples in the table's column order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from headrace.catalog import Storage
from headrace.catalog.columns import WRITTEN_SYSTEM_COLUMNS
from headrace.etl import Dropped, EtlConfig, EvaluationError
from headrace.models import ColumnType, Model
from headrace.models.inference import convert, infer_value
from headrace.models.types import fits
from transform.events import Event

# A row tuple: the written system columns (event id, received at, inserted at, overflow, partition, offset),
# then the model's columns in order.
Row = tuple[Any, ...]
OVERFLOW, SOURCE_PARTITION, SOURCE_OFFSET = 3, 4, 5
assert WRITTEN_SYSTEM_COLUMNS[OVERFLOW] == "_overflow" and WRITTEN_SYSTEM_COLUMNS[SOURCE_OFFSET] == "_source_offset"


@dataclass
class Plan:
    """The events of one write after ETL and load-mode rules: what to write, delete, reject, or leave out."""

    rows: list[tuple[Event, dict[str, Any]]] = field(default_factory=list)
    deletes: list[tuple[Event, dict[str, Any]]] = field(default_factory=list)
    rejected: list[tuple[Event, str]] = field(default_factory=list)
    dropped: list[Event] = field(default_factory=list)  # the ETL filter left them out
    markers: list[Event] = field(default_factory=list)  # batch end markers, in stream order
    batch_modes: dict[str, str] = field(default_factory=dict)
    staged_deletes: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset) of batched merge deletes

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for _, record in self.rows]


def _key_problem(storage: Storage, model: Model, record: dict[str, Any], delete: bool) -> str | None:
    """Why this record cannot be merged by its key, or None."""
    for key in storage.primary_key:
        value = record.get(key)
        if value is None:
            return f"merge: primary key field {key!r} is missing or null"
        if isinstance(value, dict | list):
            return f"merge: primary key field {key!r} holds an object or array; a key is a scalar value"
        column = model.by_key.get(key)
        if delete and column is not None and not fits(infer_value(value), column.type):
            found = infer_value(value)
            return f"merge delete: key field {key!r} is {found}, the column is {column.type}; no row can match"
    return None


def plan_events(
    storage: Storage, model: Model, etl: EtlConfig, events: list[Event], forced: dict[int, str] | None = None
) -> Plan:
    """Sort events by what the write does with them; `forced` rejects events (by index) with a given reason."""
    plan = Plan()
    for index, event in enumerate(events):
        mode = event.load_mode or storage.load_mode
        if event.batch_id is not None:
            plan.batch_modes.setdefault(event.batch_id, mode)
        if event.is_marker:
            plan.markers.append(event)
            continue
        reason = forced[index] if forced and index in forced else _refusal(storage, event, mode)
        if reason is not None:
            plan.rejected.append((event, reason))
            continue
        _plan_record(plan, storage, model, etl, event, mode)
    return plan


def _refusal(storage: Storage, event: Event, mode: str) -> str | None:
    """Why the storage refuses the event whatever its record holds; None when it does not."""
    if storage.load_mode == "replace" and event.batch_id is None:
        return "replace storage: the event has no hr-batch-id header"
    if mode == "merge" and not storage.primary_key:
        return "merge batch on a storage without a primary key"
    return None


def _plan_record(plan: Plan, storage: Storage, model: Model, etl: EtlConfig, event: Event, mode: str) -> None:
    """Put the event's record through the ETL, then into the plan: a row, a delete, dropped or rejected."""
    assert event.record is not None
    try:
        record = etl.apply(event.record, keep_all=event.delete)
    except Dropped:
        plan.dropped.append(event)
        return
    except EvaluationError as exc:
        plan.rejected.append((event, f"ETL: {exc}"))
        return
    if mode == "merge":
        problem = _key_problem(storage, model, record, event.delete)
        if problem is not None:
            plan.rejected.append((event, problem))
            return
        if event.delete:
            key = {k: record[k] for k in storage.primary_key}
            if event.batch_id is None:
                plan.deletes.append((event, key))
                return
            plan.staged_deletes.add((event.partition, event.offset))
            record = key
    plan.rows.append((event, record))


@lru_cache(maxsize=8192)
def _parse_temporal(value: Any, column_type: ColumnType) -> Any:
    # Event times repeat a lot within a batch (same second, same day): parse each distinct text once.
    return convert(value, column_type)


def _converter(column_type: ColumnType) -> Callable[[Any], Any]:
    """convert() for one column type, with the common cases done inline (this runs for every value written)."""
    if column_type in (ColumnType.DATE, ColumnType.DATETIME):
        return lambda v: (
            None if v is None else _parse_temporal(v, column_type) if isinstance(v, str) else convert(v, column_type)
        )
    if column_type is ColumnType.STRING:
        return lambda v: v if v is None or type(v) is str else convert(v, column_type)
    if column_type is ColumnType.INTEGER:
        return lambda v: v if v is None or type(v) is int else convert(v, column_type)
    if column_type is ColumnType.FLOAT:
        return lambda v: v if v is None or type(v) is float else convert(v, column_type)
    return lambda v: convert(v, column_type)


def row_tuples(model: Model, rows: list[tuple[Event, dict[str, Any]]], now: datetime) -> list[Row]:
    """Rows as tuples for COPY: written system columns, then the model's columns (fields without one overflow)."""
    known = model.by_key.keys()
    converters = [(c.key, _converter(c.type)) for c in model.columns]
    out = []
    for event, record in rows:
        # Set difference runs in C; fields without a column are rare, so most rows skip the dict entirely.
        extra = record.keys() - known
        overflow = {k: record[k] for k in extra} if extra else None
        get = record.get
        out.append(
            (
                event.event_id,
                event.received_at or now,
                now,
                overflow,
                event.partition,
                event.offset,
                *[to(get(key)) for key, to in converters],
            )
        )
    return out


def table_columns(model: Model) -> list[str]:
    """The columns row tuples fill, in their order."""
    return [*WRITTEN_SYSTEM_COLUMNS, *(c.name for c in model.columns)]
