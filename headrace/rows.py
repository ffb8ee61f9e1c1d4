"""The rows-topic contract between transform (which writes rows) and the exporter (which ships them).

`<prefix>.rows.<storage>` carries one message per row transform wrote, on the same partition number as
the ingest event it came from, in the order of that partition. The value is a JSON object:

- the row's fields under their original keys (a null field is present with null);
- `_event_id`, `_received_at`, `_inserted_at` (ISO-8601 UTC with Z), the row's system columns;
- `_source_partition`, `_source_offset`: the ingest event the row came from.

A row may be published twice (transform republishes after a crash between its Postgres commit and
the publication); both copies are identical, and within one rows partition `_source_offset` only
grows, so a consumer drops any message whose `_source_offset` is not above the last one it took from
that partition.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson

SOURCE_PARTITION = "_source_partition"
SOURCE_OFFSET = "_source_offset"
SYSTEM_FIELDS = ("_event_id", "_received_at", "_inserted_at", SOURCE_PARTITION, SOURCE_OFFSET)


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_row(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC, default=_default)


def decode_row(value: bytes) -> dict[str, Any]:
    return orjson.loads(value)


def is_duplicate(row: dict[str, Any], last_source_offset: int | None) -> bool:
    """Whether a row from one rows partition was already taken, given the last source offset taken there."""
    return last_source_offset is not None and row[SOURCE_OFFSET] <= last_source_offset
