"""Ingest-topic messages decoded into events: the record, its id, where it came from and its batch headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from headrace.catalog import Storage
from headrace.catalog.storages import LOAD_MODES
from headrace.codecs import MAGIC_BYTE, EventDecoder, UndecodableEvent, decode_json
from headrace.events import (
    BATCH_ID_HEADER,
    BATCH_ROWS_HEADER,
    DELETE_OP,
    EVENT_ID_HEADER,
    LOAD_MODE_HEADER,
    OP_FIELD,
    read_headers,
    received_at,
)


@dataclass(frozen=True)
class Event:
    """One decoded ingest event with where it came from; `record` is None for batch end markers."""

    record: dict[str, Any] | None
    event_id: str
    received_at: datetime | None
    partition: int
    offset: int
    delete: bool = False  # a merge delete: `_op: d`, or a tombstone whose key is in `record`
    batch_id: str | None = None
    batch_rows: int | None = None  # set on a batch's end marker
    load_mode: str | None = None  # the batch's own load mode (hr-load-mode), overriding the storage's
    # Whether the producer named the event (hr-event-id); an unnamed one is known by its unique position, so no
    # copy of it can arrive and the event-id window is not consulted.
    identified: bool = True

    @property
    def is_marker(self) -> bool:
        return self.batch_rows is not None


def key_record(key: bytes | None, primary_key: tuple[str, ...]) -> dict[str, Any] | None:
    """The primary key a tombstone's Kafka key names: a JSON object, a JSON array in key order, or one value."""
    if key is None or not primary_key:
        return None
    try:
        decoded = orjson.loads(key)
    except orjson.JSONDecodeError:
        decoded = key.decode(errors="replace")
    if isinstance(decoded, dict):
        return decoded
    if isinstance(decoded, list):
        return dict(zip(primary_key, decoded, strict=False)) if len(decoded) == len(primary_key) else None
    return {primary_key[0]: decoded} if len(primary_key) == 1 else None


async def decode_message(storage: Storage, message: Any, decoder: EventDecoder) -> tuple[Event | None, str]:
    """The event a message carries, or None and the reason it goes to the dead letters."""
    headers = read_headers(message.headers)
    named = headers.get(EVENT_ID_HEADER)
    event_id = named or f"{message.topic}:{message.partition}:{message.offset}"
    arrived = received_at(headers, message.timestamp)
    batch_id = headers.get(BATCH_ID_HEADER)
    load_mode = headers.get(LOAD_MODE_HEADER)
    where = {
        "partition": message.partition,
        "offset": message.offset,
        "batch_id": batch_id,
        "load_mode": load_mode,
        "identified": bool(named),
    }
    if load_mode is not None and (load_mode not in LOAD_MODES or batch_id is None):
        return None, f"bad {LOAD_MODE_HEADER} {load_mode!r}: one of {', '.join(LOAD_MODES)}, on a batch's events"
    if BATCH_ROWS_HEADER in headers:
        try:
            rows = int(headers[BATCH_ROWS_HEADER])
        except ValueError:
            return None, f"bad {BATCH_ROWS_HEADER}: {headers[BATCH_ROWS_HEADER]!r}"
        if batch_id is None or rows < 0:
            return None, f"batch end marker without {BATCH_ID_HEADER} or with a negative count"
        return Event(None, event_id, arrived, batch_rows=rows, **where), ""
    mode = load_mode or storage.load_mode
    if message.value is None:
        if mode != "merge":
            return None, "tombstone on a storage that is not merged"
        key = key_record(message.key, storage.primary_key)
        if key is None:
            return None, "tombstone without a key naming the primary key"
        return Event(key, event_id, arrived, delete=True, **where), ""
    try:
        if message.value[:1] == bytes([MAGIC_BYTE]):
            record = await decoder.decode(message.value)
        else:
            record = decode_json(message.value)
    except UndecodableEvent as exc:
        return None, exc.reason
    delete = False
    if mode == "merge" and OP_FIELD in record:
        delete = record.pop(OP_FIELD) == DELETE_OP
    return Event(record, event_id, arrived, delete=delete, **where), ""
