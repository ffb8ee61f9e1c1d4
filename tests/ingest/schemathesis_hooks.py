"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): how to write an NDJSON body, which it cannot by itself."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    # The document describes an NDJSON body like a JSON one: one object, or a list of objects, one per line.
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item, ensure_ascii=False) for item in items).encode()
