"""The fast path's pure half: a poll's JSON messages as columns that fit the model as it is, or None (the row path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from headrace.events import EVENT_ID_HEADER, OP_FIELD, RECEIVED_AT_HEADER, read_headers, received_at
from headrace.models import ColumnType, Model
from headrace.models.inference import INT64_MAX, INT64_MIN, convert, infer_value, to_text
from headrace.models.types import fits

# Headers the fast path reads; any other header (a batch's, a load mode, anything new) sends the poll the row way.
KNOWN_HEADERS = frozenset({EVENT_ID_HEADER, RECEIVED_AT_HEADER})
_NONE = type(None)
_VALUE, _PARTITION, _OFFSET = attrgetter("value"), attrgetter("partition"), attrgetter("offset")
_TOPIC, _HEADERS, _TIMESTAMP = attrgetter("topic"), attrgetter("headers"), attrgetter("timestamp")
_KEY, _HEADER_VALUE = itemgetter(0), itemgetter(1)
# The header layouts producers send (headrace.events.event_headers), read column by column.
_LAYOUTS = ((RECEIVED_AT_HEADER,), (EVENT_ID_HEADER, RECEIVED_AT_HEADER), (EVENT_ID_HEADER,), ())


@dataclass
class Columns:
    """A poll's events as columns: system columns, then one list per model column (values as convert() gives them)."""

    model_version: int
    event_ids: list[str]
    identified: list[bool]  # named by the producer (hr-event-id), so the event-id window is consulted
    received_at: list[datetime]
    partitions: list[int]
    offsets: list[int]
    values: list[list[Any]]
    key: tuple[str, ...] = ()  # a merge storage's primary key the poll was checked against; () for append

    def __len__(self) -> int:
        return len(self.offsets)

    def keep(self, mask: list[bool]) -> Columns:
        """The events whose mask entry is true, in order."""
        pick: Callable[[list[Any]], list[Any]] = lambda column: list(compress(column, mask))  # noqa: E731
        return Columns(
            self.model_version,
            pick(self.event_ids),
            pick(self.identified),
            pick(self.received_at),
            pick(self.partitions),
            pick(self.offsets),
            [pick(column) for column in self.values],
            self.key,
        )

    def records(self, now: datetime) -> Iterator[tuple[Any, ...]]:
        """Row tuples in the order of planning.table_columns: no field overflows, since every key has a column."""
        return zip(
            self.event_ids,
            self.received_at,
            repeat(now),
            repeat(None),
            self.partitions,
            self.offsets,
            *self.values,
            strict=False,  # repeat() never ends; the lists are of one length by construction
        )


def decode(model: Model, messages: Sequence[Any], key: tuple[str, ...] = ()) -> Columns | None:
    """The messages as columns if every one is a JSON object whose every field has a column its value fits as it is;
    with a merge storage's `key`, if every event is an upsert whose key planning would accept.

    None sends the poll the row path's way: tombstones, Avro, undecodable values, unknown headers, new fields,
    values that would widen a column (or that a locked model refuses), merge deletes and keys planning refuses.
    What is accepted here is written exactly as the row path writes it: the same checks (inference, fits) and the
    same conversions, done column by column.
    """
    if not messages or not model.columns:
        return None
    try:
        # orjson, as the row path's decode_json: the same JSON is accepted. None (a tombstone) is a TypeError,
        # Avro's magic byte is not JSON.
        records = list(map(orjson.loads, map(_VALUE, messages)))
    except (orjson.JSONDecodeError, TypeError):
        return None
    if set(map(type, records)) != {dict}:
        return None
    fields = set(chain.from_iterable(records))
    if not fields <= model.by_key.keys():
        return None
    if key and (OP_FIELD in fields or not all(k in model.by_key for k in key)):
        return None  # a merge `_op` (a delete, or a field taken off the record) is the row path's business
    values = []
    for column in model.columns:
        found = list(map(dict.get, records, repeat(column.key)))
        if column.key in key and not _good_key(found):
            return None
        converted = column_values(found, column.type)
        if converted is None:
            return None
        values.append(converted)
    envelope = _uniform_envelope(messages) or _envelope(messages)
    if envelope is None:
        return None
    event_ids, identified, arrived = envelope
    return Columns(
        model.version,
        event_ids,
        identified,
        arrived,
        list(map(_PARTITION, messages)),
        list(map(_OFFSET, messages)),
        values,
        key,
    )


def _good_key(values: list[Any]) -> bool:
    """Whether planning takes every value as a merge key: present, not null, a scalar (planning._key_problem)."""
    return None not in values and not {dict, list} & set(map(type, values))


def _uniform_envelope(messages: Sequence[Any]) -> tuple[list[str], list[bool], list[datetime]] | None:
    """The envelope read column by column when every message has the same headers, in one of the usual layouts;
    None leaves it to _envelope, message by message."""
    headers = list(map(_HEADERS, messages))
    if None in headers:
        return None
    flat = list(chain.from_iterable(headers))
    widths = set(map(len, headers))
    if len(widths) != 1:
        return None
    width = widths.pop()
    layout = tuple(set(map(_KEY, flat[i::width])) for i in range(width))
    if not all(len(keys) == 1 for keys in layout):
        return None
    keys = tuple(keys.pop() for keys in layout)
    if keys not in _LAYOUTS:
        return None
    count = len(messages)
    values = {key: list(map(_HEADER_VALUE, flat[i::width])) for i, key in enumerate(keys)}
    arrived = _arrivals(values.get(RECEIVED_AT_HEADER), messages)
    if arrived is None:
        return None
    named = values.get(EVENT_ID_HEADER)
    if named is None:
        ids = list(map("{}:{}:{}".format, map(_TOPIC, messages), map(_PARTITION, messages), map(_OFFSET, messages)))
        return ids, [False] * count, arrived
    if None in named or b"" in named:
        return None  # an empty id names nothing: the event is known by its position, as _envelope finds
    try:
        # Strict UTF-8: where it fails, read_headers' replacement characters are _envelope's business.
        return list(map(bytes.decode, named)), [True] * count, arrived
    except UnicodeDecodeError:
        return None


def _arrivals(values: list[Any] | None, messages: Sequence[Any]) -> list[datetime] | None:
    """Receive times from the hr-received-at values (each distinct one read once), or the messages' timestamps."""
    if values is None:
        return [received_at({}, timestamp) for timestamp in map(_TIMESTAMP, messages)]
    if None in values:
        return None
    parsed = {}
    for value in set(values):
        text = value.decode(errors="replace")
        try:
            int(text)
        except ValueError:
            return None  # received_at falls back to each message's own timestamp: _envelope does that
        parsed[value] = received_at({RECEIVED_AT_HEADER: text}, 0)  # the header parses: no fallback is read
    return list(map(parsed.__getitem__, values))


def _envelope(messages: Sequence[Any]) -> tuple[list[str], list[bool], list[datetime]] | None:
    """Event ids, whether the producer named them, and receive times, as events.decode_message reads them."""
    event_ids, identified, arrived = [], [], []
    for message in messages:
        raw = message.headers
        if raw and not all(key in KNOWN_HEADERS and value is not None for key, value in raw):
            return None
        headers = read_headers(raw)
        named = headers.get(EVENT_ID_HEADER)
        event_ids.append(named or f"{message.topic}:{message.partition}:{message.offset}")
        identified.append(bool(named))
        arrived.append(received_at(headers, message.timestamp))
    return event_ids, identified, arrived


def _in_int64(values: list[Any]) -> bool:
    # filter(None) drops nulls and zeros alike: zeros are in range anyway.
    present = list(filter(None, values))
    return not present or (min(present) >= INT64_MIN and max(present) <= INT64_MAX)


def _text(values: list[Any], kinds: set[type]) -> list[Any] | None:
    # Every JSON value fits a text column; only non-text values need their text form.
    if kinds == {str}:
        return values
    return [v if v is None or type(v) is str else to_text(v) for v in values]


def _integer(values: list[Any], kinds: set[type]) -> list[Any] | None:
    # bool is a type of its own here, as infer_value tells booleans from integers.
    return values if kinds == {int} and _in_int64(values) else None


def _float(values: list[Any], kinds: set[type]) -> list[Any] | None:
    if not kinds <= {int, float}:
        return None
    if int not in kinds:
        return values
    # An integer past 64 bits is inferred as text, which a float column does not hold.
    if not _in_int64([v for v in values if type(v) is int]):
        return None
    return [v if v is None or type(v) is float else float(v) for v in values]


def _boolean(values: list[Any], kinds: set[type]) -> list[Any] | None:
    return values if kinds == {bool} else None


def _json(values: list[Any], kinds: set[type]) -> list[Any] | None:
    return values if kinds <= {dict, list} else None


def _temporal(column_type: ColumnType) -> Callable[[list[Any], set[type]], list[Any] | None]:
    def build(values: list[Any], kinds: set[type]) -> list[Any] | None:
        if kinds != {str}:
            return None
        # Each distinct text inferred and parsed once, by the row path's own functions.
        parsed: dict[Any, Any] = {None: None}
        for text in set(values):
            if text is None:
                continue
            found = infer_value(text)
            if found is None or not fits(found, column_type):
                return None
            parsed[text] = convert(text, column_type)
        return list(map(parsed.__getitem__, values))

    return build


_BUILDERS: dict[ColumnType, Callable[[list[Any], set[type]], list[Any] | None]] = {
    ColumnType.STRING: _text,
    ColumnType.INTEGER: _integer,
    ColumnType.FLOAT: _float,
    ColumnType.BOOLEAN: _boolean,
    ColumnType.JSON: _json,
    ColumnType.DATE: _temporal(ColumnType.DATE),
    ColumnType.DATETIME: _temporal(ColumnType.DATETIME),
}


def column_values(values: list[Any], column_type: ColumnType) -> list[Any] | None:
    """One column's JSON values converted for COPY, or None if one of them does not fit the column as it is."""
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    if not kinds:
        return values
    return _BUILDERS[column_type](values, kinds)
