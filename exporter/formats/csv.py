"""CSV inside gzip: a header of property keys (optional), the chosen separator, empty cells for nulls."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson

from exporter.formats import FileWriter


def cell(value: Any) -> Any:
    """The text of one value: JSON's spelling for booleans and nested values, nothing for null."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


class CsvWriter(FileWriter):
    extension = "csv"

    def __init__(self, path: Path, known_columns: list[str], *, separator: str, header: bool) -> None:
        super().__init__(path, known_columns)
        self.text = io.TextIOWrapper(self.gzip, encoding="utf-8", newline="")  # type: ignore[type-var]
        self.csv = csv.writer(self.text, delimiter=separator, lineterminator="\n")
        self.header = header
        self.columns: list[str] | None = None
        self.column_set: frozenset[str] = frozenset()

    def add(self, row: dict[str, Any]) -> bool:
        if self.columns is None:
            self.columns = [*self.known_columns, *(k for k in row if k not in set(self.known_columns))]
            self.column_set = frozenset(self.columns)
            if self.header:
                self.csv.writerow(self.columns)
        elif not self.column_set.issuperset(row):
            return False  # the header is written: a new property starts a new file
        self.csv.writerow([cell(row.get(c)) for c in self.columns])
        self.rows += 1
        return True

    def _finish_content(self) -> None:
        # Detach rather than close: closing the wrapper would close the gzip stream before finish() does.
        self.text.flush()
        self.text.detach()
