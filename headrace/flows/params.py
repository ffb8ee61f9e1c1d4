"""A parametric step's values: a list, a range of dates (by day or month) or integers, or a column's distinct values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from headrace.flows.definitions import MAX_PARAM_VALUES, Param
from headrace.models.inference import convert, format_datetime, infer_value
from headrace.models.types import ColumnType, widen


class ParamError(ValueError):
    pass


def _json_value(value: Any) -> Any:
    """YAML gives dates as date objects; the type inference works on JSON values."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def typed_values(raw: Sequence[Any]) -> tuple[list[Any], ColumnType]:
    """Listed values as Python values of one type (the widest among them), and that type."""
    plain = [_json_value(v) for v in raw]
    found: ColumnType | None = None
    for value in plain:
        if value is None:
            raise ParamError("a parameter value cannot be null")
        found = widen(found, infer_value(value))
    assert found is not None
    if found is ColumnType.JSON:
        raise ParamError("a parameter value is a number, text, a boolean or a date, not an object or a list")
    return [convert(v, found) for v in plain], found


def _months(start: date, end: date) -> list[date]:
    found, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        found.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def declared_values(param: Param) -> tuple[list[Any], ColumnType] | None:
    """The values a parameter declares, with their type; None for `distinct`, read when the step runs."""
    if param.values is not None:
        return typed_values(param.values)
    if param.integers is not None:
        numbers = param.integers
        integers = list(range(numbers.start, numbers.end + 1, numbers.step)[: MAX_PARAM_VALUES + 1])
        _bounded(integers)
        return integers, ColumnType.INTEGER
    if param.dates is not None:
        span = param.dates
        if span.end < span.start:
            raise ParamError("the range ends before it starts")
        if span.by == "month":
            dates = _months(span.start, span.end)
        else:
            days = min((span.end - span.start).days, MAX_PARAM_VALUES) + 1
            dates = [date.fromordinal(span.start.toordinal() + i) for i in range(days)]
        _bounded(dates)
        return dates, ColumnType.DATE
    return None


def _bounded(values: list[Any]) -> None:
    if not values:
        raise ParamError("the range holds no value")
    if len(values) > MAX_PARAM_VALUES:
        raise ParamError(f"a parameter has at most {MAX_PARAM_VALUES} values")


def value_key(value: Any) -> str:
    """How a value is named in run history and run requests: its text (dates as 2024-01-01)."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def chosen(values: list[Any], wanted: Any) -> list[Any]:
    """The values a run asks for (`--param month=2024-03-01`, or a list), among those the step has."""
    asked = [wanted] if not isinstance(wanted, list) else wanted
    keys = {value_key(_json_value(v)) if not isinstance(v, str) else v for v in asked}
    picked = [v for v in values if value_key(v) in keys]
    missing = keys - {value_key(v) for v in picked}
    if missing:
        raise ParamError(f"not values of the parameter: {', '.join(sorted(missing))}")
    return picked
