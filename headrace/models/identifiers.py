"""Turns JSON keys into safe, unique Postgres column names; the model keeps the original key.

Rules, applied in order:
1. NUL and other control characters become `_` (Postgres refuses NUL; the rest is unreadable).
2. An empty key becomes `column`.
3. A key starting with `_` is prefixed with `x`: the `_` prefix is reserved for system columns.
4. The name is cut to 63 bytes of UTF-8 (Postgres' identifier limit) on a character boundary.
5. A name already taken by another key gets `~2`, `~3`, … (cut again so the whole stays in 63 bytes).

Names are always quoted in SQL, so any other character, quotes and semicolons included, is kept.
"""

from __future__ import annotations

import re

MAX_IDENTIFIER_BYTES = 63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _truncate(name: str, limit: int) -> str:
    encoded = name.encode()
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode(errors="ignore")


def base_name(key: str) -> str:
    name = _CONTROL.sub("_", key) or "column"
    if name.startswith("_"):
        name = "x" + name
    return _truncate(name, MAX_IDENTIFIER_BYTES)


class ColumnNamer:
    """Assigns column names to keys, remembering those taken so that two keys never share one."""

    def __init__(self, taken: set[str] | None = None) -> None:
        self.taken = set(taken or ())

    def name_for(self, key: str) -> str:
        name = base_name(key)
        suffix = 2
        while name in self.taken:
            tail = f"~{suffix}"
            name = _truncate(base_name(key), MAX_IDENTIFIER_BYTES - len(tail)) + tail
            suffix += 1
        self.taken.add(name)
        return name
