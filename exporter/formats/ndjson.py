"""NDJSON inside gzip: one JSON object per line, a property whose value is null left out of its line."""

from __future__ import annotations

from typing import Any

import orjson

from exporter.formats import FileWriter

_BATCH = 1000


class NdjsonWriter(FileWriter):
    extension = "json"
    _pending: list[bytes]

    def add(self, row: dict[str, Any]) -> bool:
        if not hasattr(self, "_pending"):
            self._pending = []
        self._pending.append(orjson.dumps({k: v for k, v in row.items() if v is not None}))
        self.rows += 1
        if len(self._pending) >= _BATCH:
            self._flush()
        return True

    def _flush(self) -> None:
        if self._pending:
            self.gzip.write(b"\n".join(self._pending) + b"\n")
            self._pending = []

    def _finish_content(self) -> None:
        if hasattr(self, "_pending"):
            self._flush()
