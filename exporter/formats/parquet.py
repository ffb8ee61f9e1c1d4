"""Parquet inside gzip: the whole Parquet file gzip-compressed (no codec inside), written a row group at a time.

A file's column types are fixed by the first value each column gets; a row whose value no longer fits
(integer column, text value) or that brings a new property starts a new file, so nothing is coerced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from exporter.formats import FileWriter

ROW_GROUP_ROWS = 10_000  # rows held per open Parquet file before they go out as a row group

_ARROW = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string(), dict: pa.string()}


def _kind(value: Any) -> type:
    kind = type(value)
    return dict if kind is list else kind


class ParquetFileWriter(FileWriter):
    extension = "parquet"

    def __init__(self, path: Path, known_columns: list[str]) -> None:
        super().__init__(path, known_columns)
        self.columns: list[str] | None = None
        self.column_set: frozenset[str] = frozenset()
        self.kinds: dict[str, type] = {}
        self.json_columns: set[str] = set()
        self.buffer: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def add(self, row: dict[str, Any]) -> bool:
        if self.columns is None:
            self.columns = [*self.known_columns, *(k for k in row if k not in set(self.known_columns))]
            self.column_set = frozenset(self.columns)
        if not self.column_set.issuperset(row):
            return False
        kinds = self.kinds
        open_schema = self.schema is None
        for key, value in row.items():
            if value is None:
                continue
            kind = _kind(value)
            have = kinds.get(key)
            if have is kind or (have is float and kind is int):
                continue
            if open_schema and (have is None or (have is int and kind is float)):
                kinds[key] = kind  # nothing is written yet, so the column may still take this type
                continue
            return False
        self.buffer.append(row)
        self.rows += 1
        if len(self.buffer) >= ROW_GROUP_ROWS:
            self._flush()
        return True

    def _fix_schema(self) -> pa.Schema:
        assert self.columns is not None
        # A column that saw only nulls so far is text: the widest type, so later values always fit.
        for column in self.columns:
            self.kinds.setdefault(column, str)
        self.json_columns = {c for c in self.columns if self.kinds[c] is dict}
        return pa.schema([(c, _ARROW[self.kinds[c]]) for c in self.columns])

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.schema is None:
            self.schema = self._fix_schema()
            self.writer = pq.ParquetWriter(self.gzip, self.schema, compression="none")
        rows = self.buffer
        if self.json_columns:
            rows = [
                {k: (orjson.dumps(v).decode() if k in self.json_columns and v is not None else v) for k, v in r.items()}
                for r in rows
            ]
        table = pa.Table.from_pylist(rows, schema=self.schema)
        assert self.writer is not None
        self.writer.write_table(table)
        self.buffer = []

    def _finish_content(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
