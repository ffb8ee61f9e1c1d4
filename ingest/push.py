"""From parsed records to Kafka events: each event's id, its key (the storage's primary key) and its value."""

from __future__ import annotations

from typing import Any

import orjson

from headrace.events import event_headers, event_key
from ingest.body import PushRefused

EVENT_ID_FIELD = "_id"
MAX_EVENT_ID_LENGTH = 200
# The largest event value: the producer refuses a message past 1 MiB (aiokafka's max_request_size, as Kafka's
# message.max.bytes), which would otherwise be a 503 no retry can ever get past. Headroom for key and headers.
MAX_EVENT_BYTES = 1_000_000

Event = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # value, key, headers


def _explicit_id(record: dict[str, Any], index: int) -> str | None:
    """The record's own `_id`, taken out of it (the `_` prefix belongs to system columns)."""
    given = record.pop(EVENT_ID_FIELD, None)
    if given is None:
        return None
    if isinstance(given, bool) or not isinstance(given, str | int):
        raise PushRefused(
            400, "bad_event_id", f"element {index}: `_id` must be a string or an integer", {"index": index}
        )
    text = str(given)
    if not text or len(text) > MAX_EVENT_ID_LENGTH:
        raise PushRefused(
            400,
            "bad_event_id",
            f"element {index}: `_id` must have 1 to {MAX_EVENT_ID_LENGTH} characters",
            {"index": index},
        )
    return text


def build_events(
    records: list[dict[str, Any]], primary_key: tuple[str, ...], idempotency_key: str | None, received_ms: int
) -> list[Event]:
    """One event per record. Its id: the record's `_id`, else the Idempotency-Key (with `:<index>` in a batch
    of several), so a client retrying the same push sends the same ids and transform writes each once; else none,
    and the event is known by its Kafka position (nothing can send it again under the same id)."""
    if idempotency_key is not None and not (
        0 < len(idempotency_key) <= MAX_EVENT_ID_LENGTH and idempotency_key.isascii() and idempotency_key.isprintable()
    ):
        raise PushRefused(
            400,
            "bad_event_id",
            f"the Idempotency-Key header must have 1 to {MAX_EVENT_ID_LENGTH} printable ASCII characters",
        )
    single = len(records) == 1
    dumps = orjson.dumps
    events: list[Event] = []
    for index, record in enumerate(records):
        event_id = _explicit_id(record, index) if EVENT_ID_FIELD in record else None
        if event_id is None and idempotency_key is not None:
            event_id = idempotency_key if single else f"{idempotency_key}:{index}"
        try:
            # A right-sized copy: orjson returns its 4 KiB write buffer as is, which held until Kafka acks made
            # 3 million `{}` events cost 13 GB.
            value = bytes(memoryview(dumps(record)))
        except orjson.JSONEncodeError:
            # orjson reads 1024 levels but writes only 254; the storage's JSON columns go through the same writer.
            raise PushRefused(
                400, "too_deep", f"element {index} is nested more than 254 levels deep", {"index": index}
            ) from None
        if len(value) > MAX_EVENT_BYTES:
            raise PushRefused(
                413,
                "event_too_large",
                f"element {index} is {len(value)} bytes as JSON, more than the {MAX_EVENT_BYTES} a Kafka event holds",
                {"index": index, "limit": MAX_EVENT_BYTES},
            )
        key = event_key(primary_key, record) if primary_key else None
        events.append((value, key, event_headers(event_id, received_ms)))
    return events
