"""CSV (gzipped unless told not to): a separator, a header row (optional), empty cells for nulls, ISO-8601 datetimes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from headrace.formats import FileOptions, Format, TextFileWriter
from headrace.formats.text import as_text, column_types
from headrace.models.types import ColumnType

# pyarrow already spells booleans true/false and nulls as empty cells; dates and datetimes are spelled here.
_SPELLED = (ColumnType.DATE, ColumnType.DATETIME)


class CsvFormat(Format):
    extension = "csv"

    def __init__(self, options: FileOptions, schema: pa.Schema) -> None:
        super().__init__(options, schema)
        self.types = column_types(schema)

    def prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = [as_text(c, t) if t in _SPELLED else c for c, t in zip(batch.columns, self.types, strict=True)]
        return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    def open(self, path: Path) -> CsvFileWriter:
        return CsvFileWriter(path, self.options.csv_separator, self.options.csv_header, self.options.gzip)


class CsvFileWriter(TextFileWriter):
    def __init__(self, path: Path, separator: str, header: bool, gzip: bool = True) -> None:
        super().__init__(path, gzip)
        self.separator = separator
        self.header = header

    def encode(self, piece: pa.RecordBatch) -> pa.Buffer:
        out = pa.BufferOutputStream()
        # pyarrow quotes text cells (so a separator or a line break inside one is safe) and leaves numbers bare.
        options = pacsv.WriteOptions(include_header=self.header and self.rows == 0, delimiter=self.separator)
        pacsv.write_csv(piece, out, options)
        return out.getvalue()
