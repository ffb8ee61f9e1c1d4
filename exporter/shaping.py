"""Shaping rows column-wise: the output columns, the property selection, the privacy filter and each row's interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from exporter.definitions import ExportDefinition
from exporter.partitioning import EPOCH, MILLIS_FROM, parse_event_time
from headrace.catalog.columns import SYSTEM_COLUMNS, VISIBLE_SYSTEM_COLUMNS
from headrace.formats.text import as_text
from headrace.models import Model
from headrace.models.model import OVERFLOW_COLUMN
from headrace.models.types import ColumnType, widen
from headrace.postgres import quote_ident

STORAGE_FIELD = "_storage"  # which storage a row came from; exports may mix several
OVERFLOW_FIELD = OVERFLOW_COLUMN  # fields without a column, as one JSON object (only when a model is full)
_DDL_TYPES = {"text": ColumnType.STRING, "timestamptz": ColumnType.DATETIME}
_SYSTEM_TYPES = {c.name: _DDL_TYPES[c.ddl.split()[0]] for c in SYSTEM_COLUMNS if c.name in VISIBLE_SYSTEM_COLUMNS}
# The system properties every row carries unless the selection leaves them out, and their types.
SYSTEM_OUTPUT: tuple[tuple[str, ColumnType], ...] = (
    (STORAGE_FIELD, ColumnType.STRING),
    *((name, _SYSTEM_TYPES[name]) for name in VISIBLE_SYSTEM_COLUMNS),
)
RESERVED = frozenset({*(k for k, _ in SYSTEM_OUTPUT), OVERFLOW_FIELD})
ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.DATE: pa.date32(),
    ColumnType.DATETIME: pa.timestamp("us", "UTC"),
    ColumnType.STRING: pa.string(),
    ColumnType.JSON: pa.string(),  # the JSON text, as Postgres spells it
}
JSON_MARK = {b"headrace.type": b"json"}  # field metadata telling writers a string column holds JSON text
UNKNOWN_ID = -(2**63)  # the interval id of rows whose event time is missing or unparseable
# The instants Python's datetime can hold (years 1 to 9999), in microseconds since the epoch.
MIN_MICROS, MAX_MICROS = -62_135_596_800_000_000, 253_402_300_799_999_999
_MICROSECOND = timedelta(microseconds=1)
_FLOOR = {"date": (1, "day"), "hour": (1, "hour"), "half-hour": (30, "minute"), "quarter-hour": (15, "minute")}


def selected(definition: ExportDefinition, key: str) -> bool:
    selection = definition.properties
    if selection.mode == "include":
        return key in selection.names
    if selection.mode == "exclude":
        return key not in selection.names
    return True


@dataclass(frozen=True)
class Output:
    """The columns every file of a run has, in order, with the type each has in this run."""

    keys: tuple[str, ...]
    types: tuple[ColumnType, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            pa.field(k, ARROW_TYPES[t], metadata=JSON_MARK if t is ColumnType.JSON else None)
            for k, t in zip(self.keys, self.types, strict=True)
        )

    @classmethod
    def build(cls, definition: ExportDefinition, models: list[Model], max_columns: int) -> Output:
        """System properties, then every source model's keys (a key in several takes the wider type), as selected."""
        columns = {k: t for k, t in SYSTEM_OUTPUT if selected(definition, k)}
        for model in models:
            for column in model.columns:
                if column.key not in RESERVED and selected(definition, column.key):
                    columns[column.key] = widen(columns.get(column.key), column.type) or column.type
        # `_overflow` only holds values once a model is full (null-only fields are stripped): only then a column.
        full = any(len(m.columns) >= max_columns for m in models)
        explicit = definition.properties.mode == "include" and OVERFLOW_FIELD in definition.properties.names
        if explicit or (full and selected(definition, OVERFLOW_FIELD)):
            columns[OVERFLOW_FIELD] = ColumnType.JSON
        return cls(tuple(columns), tuple(columns.values()))


def plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array, extension types (ADBC's arrow.json) reduced to their storage."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    return array


def conform(array: pa.Array, source: ColumnType, target: ColumnType) -> pa.Array:
    """A storage's column in the run's (possibly wider) type for that key."""
    if source is target or (source is ColumnType.JSON and target is ColumnType.STRING):
        return array
    if target is ColumnType.STRING:
        return as_text(array, source)
    return array.cast(ARROW_TYPES[target])  # integer→float, date→datetime


def event_moments(array: pa.Array | None, source: ColumnType | None) -> pa.Array:
    """Each row's event time as a UTC timestamp, or null (the `unknown` interval), like parse_event_time."""
    timestamp = pa.timestamp("us", "UTC")
    if array is None or source in (None, ColumnType.BOOLEAN, ColumnType.JSON):
        return pa.nulls(0 if array is None else len(array), timestamp)
    if source is ColumnType.DATETIME:
        return array
    if source is ColumnType.DATE:
        return array.cast(timestamp)
    if source is ColumnType.STRING:
        # Text is parsed once per distinct value, in Python, so it means exactly what parse_event_time says.
        uniques = pc.unique(array)
        micros = pa.array([_micros(parse_event_time(v)) for v in uniques.to_pylist()], pa.int64())
        return micros.take(pc.index_in(array, value_set=uniques)).cast(timestamp)
    # Epoch numbers: milliseconds from 10^11 up, else seconds; outside datetime's years 1..9999 is unknown.
    values = array.cast(pa.float64(), safe=False)
    millis = pc.greater_equal(pc.abs(values), MILLIS_FROM)
    scaled = pc.round(pc.multiply(values, pc.if_else(millis, 1_000.0, 1_000_000.0)))
    inside = pc.and_(pc.greater_equal(scaled, float(MIN_MICROS)), pc.less_equal(scaled, float(MAX_MICROS)))
    scaled = pc.if_else(inside, scaled, pa.scalar(None, pa.float64()))  # also drops NaN and infinities
    if source is ColumnType.INTEGER:
        # Exact for integers: float64 would round the microseconds of far-off instants.
        factor = pc.if_else(millis, 1_000, 1_000_000)
        exact = pc.multiply(pc.if_else(inside, array, pa.scalar(None, pa.int64())), factor)
        return exact.cast(pa.int64()).cast(timestamp)
    return scaled.cast(pa.int64(), safe=False).cast(timestamp)


def _micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    micros = (moment - EPOCH) // _MICROSECOND
    return micros if MIN_MICROS <= micros <= MAX_MICROS else None


def interval_ids(moments: pa.Array, level: str) -> pa.Array:
    """Each row's interval as the microsecond its interval starts at; UNKNOWN_ID for rows without an event time."""
    multiple, unit = _FLOOR[level]
    # Naive timestamps floor ~10x faster than zoned ones; the values are UTC either way.
    floored = pc.floor_temporal(moments.cast(pa.timestamp("us")), multiple=multiple, unit=unit)
    return floored.cast(pa.int64()).fill_null(UNKNOWN_ID)


def kept_by_consent(array: pa.Array | None, source: ColumnType | None) -> pa.Array | None:
    """Which rows the privacy filter keeps (None: all): false refuses, as a boolean or as text; null is no answer."""
    if array is None or source not in (ColumnType.BOOLEAN, ColumnType.STRING):
        return None
    if source is ColumnType.BOOLEAN:
        refused = pc.equal(array, False)
    else:
        refused = pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(array)), "false")
    return pc.invert(refused.fill_null(False))


def group_by_interval(batch: pa.RecordBatch, ids: pa.Array, compact: bool = False) -> list[tuple[int, pa.RecordBatch]]:
    """The batch's rows by interval id, each group in the batch's order. `compact`: each group copied out on its
    own, so a group held back (for a Parquet row group) keeps nothing else of the batch alive."""
    if len(batch) == 0:
        return []
    counts = pc.value_counts(ids)
    if len(counts) == 1:
        return [(counts.field(0)[0].as_py(), batch)]
    order = pc.sort_indices(ids)  # stable: rows of one interval keep their order
    ordered = None if compact else batch.take(order)
    sorted_counts = pc.value_counts(ids.take(order))
    groups, start = [], 0
    for value, count in zip(sorted_counts.field(0).to_pylist(), sorted_counts.field(1).to_pylist(), strict=True):
        group = batch.take(order.slice(start, count)) if ordered is None else ordered.slice(start, count)
        groups.append((value, group))
        start += count
    return groups


@dataclass
class Shaped:
    """A batch in the run's output columns, each row's interval id, and what shaping left out or could not place."""

    batch: pa.RecordBatch
    ids: pa.Array
    dropped_privacy: int = 0
    unknown_time: int = 0


_SYSTEM_SQL = {
    **{name: (quote_ident(name), column_type) for name, column_type in _SYSTEM_TYPES.items()},
    # Null-only fields are stripped: what is left are values of fields a full model had no room for.
    OVERFLOW_FIELD: (f"NULLIF(jsonb_strip_nulls({OVERFLOW_COLUMN}), '{{}}'::jsonb)", ColumnType.JSON),
}


class SourceShape:
    """What one storage gives a run: the expressions to read, and how a batch of them becomes output rows."""

    def __init__(self, definition: ExportDefinition, output: Output, storage: str, model: Model) -> None:
        self.definition = definition
        self.output = output
        self.storage = storage
        self.expressions: list[str] = []
        self.types: list[ColumnType] = []
        self.event = self._read(definition.event_time_column, model)
        self.consent = self._read(definition.consent_column, model) if definition.privacy_filter else None
        self.outputs = [self._read(key, model) for key in output.keys]

    def _read(self, key: str, model: Model) -> int | None:
        """The position of a key's column among the expressions read (added once), or None when it has none."""
        if key in _SYSTEM_SQL:  # system columns win over a model key of the same name, as in stored rows
            expression, column_type = _SYSTEM_SQL[key]
        elif key in model.by_key and key not in RESERVED:
            column = model.by_key[key]
            expression, column_type = quote_ident(column.name), column.type
        else:
            return None
        if expression in self.expressions:
            return self.expressions.index(expression)
        self.expressions.append(expression)
        self.types.append(column_type)
        return len(self.expressions) - 1

    def select_list(self) -> str:
        """The SELECT list; columns are named by position, so any key or column name reads back safely."""
        return ", ".join(f"{e} AS c{i}" for i, e in enumerate(self.expressions)) or "1 AS c0"

    def shape(self, batch: pa.RecordBatch, period: tuple[datetime, datetime] | None = None) -> Shaped:
        """Filter (privacy, and a regeneration's period), place each row in its interval, conform its columns."""
        columns = [plain(batch.column(i)) for i in range(len(self.expressions))]
        n = len(batch)
        mask = None
        dropped = 0
        if self.consent is not None:
            mask = kept_by_consent(columns[self.consent], self.types[self.consent])
            dropped = 0 if mask is None else n - pc.sum(mask).as_py()
        event = None if self.event is None else columns[self.event]
        moments = event_moments(event, None if self.event is None else self.types[self.event])
        if len(moments) != n:
            moments = pa.nulls(n, pa.timestamp("us", "UTC"))
        if period is not None:
            inside = pc.and_(
                pc.greater_equal(moments, pa.scalar(period[0], moments.type)),
                pc.less(moments, pa.scalar(period[1], moments.type)),
            ).fill_null(False)
            mask = inside if mask is None else pc.and_(mask, inside)
        out = []
        for key_type, index in zip(self.output.types, self.outputs, strict=True):
            if index is None:
                out.append(pa.nulls(n, ARROW_TYPES[key_type]))
            else:
                out.append(conform(columns[index], self.types[index], key_type))
        if STORAGE_FIELD in self.output.keys:
            out[self.output.keys.index(STORAGE_FIELD)] = pa.repeat(pa.scalar(self.storage), n)
        shaped = pa.RecordBatch.from_arrays(out, schema=self.output.schema)
        if mask is not None and pc.all(mask).as_py() is False:
            shaped, moments = shaped.filter(mask), moments.filter(mask)
        return Shaped(shaped, interval_ids(moments, self.definition.partition_level), dropped, moments.null_count)
