"""Values as text, column-wise: ISO-8601 datetimes, JSON strings and JSON values, the spellings every format shares."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from headrace.models.types import ColumnType


def iso_text(array: pa.Array) -> pa.Array:
    """UTC timestamps as ISO-8601 text with Z: `2021-04-08T10:58:14Z`, with `.ffffff` only when not zero.

    Arrow's own cast of zoned timestamps is ~30x slower than of naive ones, so the naive text is reshaped with numpy.
    """
    naive = array.cast(pa.timestamp("us")).fill_null(0)
    text = naive.cast(pa.string())  # "YYYY-MM-DD HH:MM:SS.ffffff": 26 bytes while years have 4 digits
    n = len(text)
    if n == 0:
        return text
    offsets = np.frombuffer(text.buffers()[1], np.int32, n + 1, text.offset * 4)
    if offsets[-1] - offsets[0] != 26 * n:  # a year outside 1000..9999
        return _iso_text_slow(array)
    grid = np.frombuffer(text.buffers()[2], np.uint8, 26 * n, offsets[0]).reshape(n, 26)
    whole = (naive.cast(pa.int64()).to_numpy() % 1_000_000) == 0
    if whole.all():
        result = _fixed_width(grid, 20)
    else:
        result = _fixed_width(grid, 27)
        if whole.any():
            result = _drop_zero_fractions(result, whole)
    return pc.if_else(array.is_valid(), result, pa.scalar(None, pa.string())) if array.null_count else result


def _fixed_width(grid: np.ndarray, width: int) -> pa.Array:
    """Strings of one width from the rows of `grid` (naive text): its first width-1 bytes, 'T' for ' ', then 'Z'."""
    n = len(grid)
    out = np.empty((n, width), np.uint8)
    out[:, : width - 1] = grid[:, : width - 1]
    out[:, 10] = ord("T")
    out[:, -1] = ord("Z")
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.reshape(-1)))


def _drop_zero_fractions(text: pa.Array, whole: np.ndarray) -> pa.Array:
    """27-byte texts without their ".000000" where `whole`: one compaction of the bytes, offsets by cumsum."""
    n = len(text)
    keep = np.ones(n * 27, bool)
    rows = np.flatnonzero(whole) * 27
    keep[(rows[:, None] + np.arange(19, 26)).reshape(-1)] = False
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.where(whole, 20, 27).astype(np.int32), out=offsets[1:])
    data = np.frombuffer(text.buffers()[2], np.uint8, n * 27)[keep]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _iso_text_slow(array: pa.Array) -> pa.Array:
    text = pc.strftime(array.cast(pa.timestamp("us")), "%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(pc.replace_substring(text, ".000000", "", max_replacements=1), "Z", "")


def as_text(array: pa.Array, source: ColumnType) -> pa.Array:
    """A column's values spelled as text, the way a widened Postgres column would hold them."""
    if source is ColumnType.DATETIME:
        return iso_text(array)
    return array.cast(pa.string())


# JSON's short escapes; other control characters become \u00XX.
_SHORT_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def json_string(array: pa.Array) -> pa.Array:
    """Text values as JSON strings (quoted, escaped as orjson would)."""
    for raw, escaped in _SHORT_ESCAPES:
        array = pc.replace_substring(array, raw, escaped)
    if pc.any(pc.match_substring_regex(array, "[\\x00-\\x1f]")).as_py():
        for code in range(32):
            array = pc.replace_substring(array, chr(code), f"\\u{code:04x}")
    return pc.binary_join_element_wise('"', array, '"', "")


def json_value(array: pa.Array, column_type: ColumnType) -> pa.Array:
    """Each value as JSON text, null for null (and for NaN or infinite floats, which JSON cannot hold)."""
    if column_type is ColumnType.JSON:
        return array
    if column_type is ColumnType.STRING:
        return json_string(array)
    if column_type is ColumnType.FLOAT:
        # Arrow spells 3.0 as "3"; ".0" keeps it a float for readers that infer types from JSON.
        text = pc.replace_substring_regex(array.cast(pa.string()), r"^(-?\d+)$", r"\1.0")
        return pc.if_else(pc.is_finite(array), text, pa.scalar(None, pa.string()))
    if column_type in (ColumnType.INTEGER, ColumnType.BOOLEAN):
        return array.cast(pa.string())
    return pc.binary_join_element_wise('"', as_text(array, column_type), '"', "")


def json_lines(batch: pa.RecordBatch, types: list[ColumnType]) -> pa.Array:
    """One JSON object per row, `\\n`-terminated, a null property left out of its line."""
    # Each member carries its own trailing comma and is null when its value is; nulls join as nothing, and the
    # last comma is trimmed (no JSON value ends with one). pyarrow 26's null_handling="skip" loses all-null rows.
    members = [
        pc.binary_join_element_wise(orjson.dumps(key).decode() + ":", json_value(batch.column(i), t), ",", "")
        for i, (key, t) in enumerate(zip(batch.schema.names, types, strict=True))
    ]
    if not members:
        return pa.repeat(pa.scalar("{}\n"), len(batch))
    body = pc.binary_join_element_wise(*members, "", null_handling="replace", null_replacement="")
    return pc.binary_join_element_wise("{", pc.utf8_rtrim(body, characters=","), "}\n", "")


def column_types(schema: pa.Schema) -> list[ColumnType]:
    """The model type behind each column of a run's schema (JSON text is a string column marked as such)."""
    out = []
    for field in schema:
        if field.metadata and field.metadata.get(b"headrace.type") == b"json":
            out.append(ColumnType.JSON)
        elif pa.types.is_timestamp(field.type):
            out.append(ColumnType.DATETIME)
        else:
            out.append(_BY_ARROW.get(field.type, ColumnType.STRING))
    return out


_BY_ARROW = {
    pa.int64(): ColumnType.INTEGER,
    pa.float64(): ColumnType.FLOAT,
    pa.bool_(): ColumnType.BOOLEAN,
    pa.date32(): ColumnType.DATE,
}
