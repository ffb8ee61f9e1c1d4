"""NDJSON (gzipped unless told not to): one JSON object per line, a property whose value is null left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from headrace.formats import FileOptions, Format, TextFileWriter
from headrace.formats.text import column_types, json_lines


class NdjsonFormat(Format):
    extension = "json"

    def __init__(self, options: FileOptions, schema: pa.Schema) -> None:
        super().__init__(options, schema)
        self.types = column_types(schema)

    def prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        # Whole lines are built once per batch, column-wise; the files then only take slices of them.
        return pa.RecordBatch.from_arrays([json_lines(batch, self.types)], names=["line"])

    def open(self, path: Path) -> NdjsonFileWriter:
        return NdjsonFileWriter(path, self.options.gzip)


class NdjsonFileWriter(TextFileWriter):
    def encode(self, piece: pa.RecordBatch) -> memoryview:
        # Every line ends with "\n", so a slice of the lines' data buffer is the file's text, with no copy.
        lines = piece.column(0)
        offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
        return memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]]
