"""The event envelope on ingest topics: the record as the JSON value, its id and receive time in headers."""

from __future__ import annotations

from datetime import UTC, datetime

EVENT_ID_HEADER = "hr-event-id"
RECEIVED_AT_HEADER = "hr-received-at"  # milliseconds since the epoch, as text
REASON_HEADER = "hr-reason"
SOURCE_HEADER = "hr-source"  # topic:partition:offset the dead letter came from


def event_headers(event_id: str, received_at_ms: int) -> list[tuple[str, bytes]]:
    return [(EVENT_ID_HEADER, event_id.encode()), (RECEIVED_AT_HEADER, str(received_at_ms).encode())]


def read_headers(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in headers or ():
        if key.startswith("hr-") and value is not None:
            found[key] = value.decode(errors="replace")
    return found


def received_at(headers: dict[str, str], fallback_ms: int) -> datetime:
    try:
        millis = int(headers[RECEIVED_AT_HEADER])
    except (KeyError, ValueError):
        millis = fallback_ms
    return datetime.fromtimestamp(millis / 1000, UTC)
