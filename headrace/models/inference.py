"""Infers a column type from one value (JSON) or one text cell (CSV), and converts values for writing."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import orjson

from headrace.models.types import ColumnType

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
# Strict ISO-8601 / RFC 3339: date, 'T' or space, hours and minutes, optional seconds and fraction, optional zone.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?\Z")
_INTEGER_TEXT = re.compile(r"[+-]?\d+\Z")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")


def parse_date(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_datetime(text: str) -> datetime | None:
    """A strict ISO-8601 datetime, as an aware UTC datetime (naive times are taken as UTC)."""
    if not _DATETIME.match(text):
        return None
    fraction = re.search(r"\.(\d+)", text) if "." in text else None
    if fraction and len(fraction.group(1)) > 6:
        # Python keeps microseconds; nanosecond digits beyond them are cut, as Postgres would round them.
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6], 1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _infer_string(value: str) -> ColumnType:
    # Cheap shape test first: most strings are not dates, and regexes per value add up.
    if 10 <= len(value) <= 35 and value[4] == "-" and value[7] == "-":
        if parse_date(value) is not None:
            return ColumnType.DATE
        if parse_datetime(value) is not None:
            return ColumnType.DATETIME
    return ColumnType.STRING


def infer_value(value: Any) -> ColumnType | None:
    """The type of a JSON value; None for null, which never creates or changes a type."""
    if value is None:
        return None
    if value is True or value is False:
        return ColumnType.BOOLEAN
    if isinstance(value, int):
        # A number past 64 bits has no exact float; its digits are kept as text rather than rounded.
        return ColumnType.INTEGER if INT64_MIN <= value <= INT64_MAX else ColumnType.STRING
    if isinstance(value, float):
        return ColumnType.FLOAT
    if isinstance(value, str):
        return _infer_string(value)
    if isinstance(value, (dict, list)):
        return ColumnType.JSON
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def parse_text(text: str) -> Any:
    """A CSV cell as the JSON value it stands for: '' is null, then integers, floats, booleans, else text.

    Dates stay text here; infer_value recognises them as it does in pushed JSON.
    """
    if text == "":
        return None
    if _INTEGER_TEXT.match(text):
        number = int(text)
        return number if INT64_MIN <= number <= INT64_MAX else text
    if _FLOAT_TEXT.match(text):
        return float(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def infer_text(text: str) -> ColumnType | None:
    """The type of a CSV cell, inferred as a pushed value would be."""
    return infer_value(parse_text(text))


def format_datetime(value: datetime) -> str:
    """ISO-8601 text in UTC with a Z, the same form Postgres widening produces."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int,)):
        return str(value)
    return orjson.dumps(value).decode()


def convert(value: Any, column_type: ColumnType) -> Any:
    """A JSON value as the Python value Postgres stores in a column of this type.

    The caller has widened the column to fit the value first, so every branch here is exact.
    """
    if value is None:
        return None
    if column_type is ColumnType.STRING:
        return to_text(value)
    if column_type is ColumnType.INTEGER:
        return int(value)
    if column_type is ColumnType.FLOAT:
        return float(value)
    if column_type is ColumnType.BOOLEAN:
        return bool(value)
    if column_type is ColumnType.DATE:
        return parse_date(value)
    if column_type is ColumnType.DATETIME:
        parsed = parse_date(value)
        if parsed is not None:
            return datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
        return parse_datetime(value)
    return value
