"""CSV in gzip: the chosen separator, a header row (optional), empty cells for nulls, ISO-8601 UTC datetimes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from exporter.definitions import ExportDefinition
from exporter.formats import Format, GzipFileWriter
from exporter.formats.text import as_text, column_types
from headrace.models.types import ColumnType

# pyarrow already spells booleans true/false and nulls as empty cells; dates and datetimes are spelled here.
_SPELLED = (ColumnType.DATE, ColumnType.DATETIME)


class CsvFormat(Format):
    suffix = "csv.gz"

    def __init__(self, definition: ExportDefinition, schema: pa.Schema) -> None:
        super().__init__(definition, schema)
        self.types = column_types(schema)

    def prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = [as_text(c, t) if t in _SPELLED else c for c, t in zip(batch.columns, self.types, strict=True)]
        return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    def open(self, path: Path) -> CsvFileWriter:
        return CsvFileWriter(path, self.definition.csv_separator, self.definition.csv_header)


class CsvFileWriter(GzipFileWriter):
    def __init__(self, path: Path, separator: str, header: bool) -> None:
        super().__init__(path)
        self.separator = separator
        self.header = header

    def encode(self, piece: pa.RecordBatch) -> pa.Buffer:
        out = pa.BufferOutputStream()
        # pyarrow quotes text cells (so a separator or a line break inside one is safe) and leaves numbers bare.
        options = pacsv.WriteOptions(include_header=self.header and self.rows == 0, delimiter=self.separator)
        pacsv.write_csv(piece, out, options)
        return out.getvalue()
