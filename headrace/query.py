"""Reads a storage's rows back as JSON-ready dicts keyed by the original field names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.models import Model
from headrace.models.inference import convert
from headrace.models.types import ColumnType
from headrace.postgres import quote_ident

SYSTEM_COLUMNS = ("_event_id", "_received_at", "_inserted_at", "_source_partition", "_source_offset")


def stored_columns(model: Model) -> str:
    """The SELECT list that reads a storage row whole: system columns, `_overflow`, then the model's columns."""
    return ", ".join(quote_ident(c) for c in (*SYSTEM_COLUMNS, "_overflow", *(c.name for c in model.columns)))


def stored_row(record: asyncpg.Record, model: Model) -> dict[str, Any]:
    """A row read with stored_columns() as fields by their original keys, system fields first.

    System fields win over a same-named key, and model columns over `_overflow` entries.
    """
    row: dict[str, Any] = {name: record[name] for name in SYSTEM_COLUMNS}
    for column in model.columns:
        row.setdefault(column.key, record[column.name])
    overflow = record["_overflow"]
    if overflow:
        for key, value in overflow.items():
            row.setdefault(key, value)
    return row


async def fetch_rows(catalog: Catalog, storage: Storage, limit: int | None = None) -> list[dict[str, Any]]:
    """Every row in insertion order: system columns under their `_` names, then the model's fields."""
    model = await catalog.model(storage.id)
    sql = f"SELECT {stored_columns(model)} FROM {storage.qualified_table} ORDER BY _inserted_at, _event_id"
    args: list[Any] = []
    if limit is not None:
        sql += " LIMIT $1"
        args.append(limit)
    return [stored_row(record, model) for record in await catalog.pool.fetch(sql, *args)]


# -- queries built from a declarative spec: columns, filters, group by, aggregates, order, limit ----------------------

FILTER_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null", "like")
AGGREGATES = ("sum", "count", "count_distinct", "min", "max", "avg")
# System columns a query may name, with the type their values come back as.
QUERYABLE_SYSTEM_COLUMNS = {
    "_event_id": ColumnType.STRING,
    "_received_at": ColumnType.DATETIME,
    "_inserted_at": ColumnType.DATETIME,
}


class QueryError(ValueError):
    """The query names an unknown column, operator or aggregate, or is malformed: the message says which."""


@dataclass(frozen=True)
class BuiltQuery:
    sql: str
    args: list[Any]
    columns: list[tuple[str, ColumnType]]  # the result's columns: their names (original keys or aliases) and types


def _resolve(model: Model, key: Any) -> tuple[str, ColumnType]:
    """A field's quoted column and type, only ever from the model: user text never reaches the SQL as is."""
    if not isinstance(key, str):
        raise QueryError(f"a column is named by a string, not {key!r}")
    column = model.by_key.get(key)
    if column is not None:
        return quote_ident(column.name), column.type
    if key in QUERYABLE_SYSTEM_COLUMNS:
        return quote_ident(key), QUERYABLE_SYSTEM_COLUMNS[key]
    raise QueryError(f"no column {key!r} in this storage")


def _parameter(value: Any, column_type: ColumnType, args: list[Any]) -> str:
    if column_type is ColumnType.JSON:
        raise QueryError("JSON columns cannot be compared")
    converted = convert(value, column_type) if column_type is not ColumnType.STRING else str(value)
    if converted is None and value is not None:
        raise QueryError(f"{value!r} is not a {column_type.value}")
    args.append(converted)
    return f"${len(args)}"


def _condition(model: Model, clause: Any, args: list[Any]) -> str:
    if not isinstance(clause, list | tuple) or not 2 <= len(clause) <= 3:
        raise QueryError(f"a filter is [column, operator] or [column, operator, value], not {clause!r}")
    column, column_type = _resolve(model, clause[0])
    operator = str(clause[1]).lower().strip()
    if operator not in FILTER_OPERATORS:
        raise QueryError(f"unknown filter operator {clause[1]!r}; use one of {', '.join(FILTER_OPERATORS)}")
    if operator in ("is null", "is not null"):
        return f"{column} {operator.upper()}"
    if len(clause) != 3:
        raise QueryError(f"the {operator!r} filter needs a value")
    value = clause[2]
    if operator in ("in", "not in"):
        if not isinstance(value, list | tuple) or not value:
            raise QueryError(f"the {operator!r} filter needs a non-empty list")
        placeholders = ", ".join(_parameter(v, column_type, args) for v in value)
        return f"{column} {operator.upper()} ({placeholders})"
    if value is None:
        raise QueryError(f"compare with null using 'is null' or 'is not null', not {operator!r}")
    if operator == "like":
        args.append(str(value))
        return f"{column}::text LIKE ${len(args)}"
    return f"{column} {'<>' if operator == '!=' else operator} {_parameter(value, column_type, args)}"


def _aggregate(model: Model, spec: Any) -> tuple[str, str, ColumnType]:
    """An aggregate's SQL, its result name and type, from {"fn": ..., "column": ..., "as": ...} or [fn, column]."""
    if isinstance(spec, list | tuple) and len(spec) in (2, 3):
        spec = {"fn": spec[0], "column": spec[1], **({"as": spec[2]} if len(spec) == 3 else {})}
    if not isinstance(spec, dict) or "fn" not in spec:
        raise QueryError(f'an aggregate is {{"fn": ..., "column": ..., "as": ...}}, not {spec!r}')
    function = str(spec["fn"]).lower()
    if function not in AGGREGATES:
        raise QueryError(f"unknown aggregate {spec['fn']!r}; use one of {', '.join(AGGREGATES)}")
    key = spec.get("column")
    name = str(spec.get("as") or (f"{function}_{key}" if key not in (None, "*") else function))
    if function == "count" and key in (None, "*"):
        return "count(*)", name, ColumnType.INTEGER
    column, column_type = _resolve(model, key)
    if function == "count":
        return f"count({column})", name, ColumnType.INTEGER
    if function == "count_distinct":
        return f"count(DISTINCT {column})", name, ColumnType.INTEGER
    if function in ("sum", "avg"):
        if column_type not in (ColumnType.INTEGER, ColumnType.FLOAT):
            raise QueryError(f"{function} needs a numeric column; {key!r} is {column_type.value}")
        if function == "avg":
            return f"avg({column})::double precision", name, ColumnType.FLOAT
        if column_type is ColumnType.INTEGER:
            return f"sum({column})::bigint", name, ColumnType.INTEGER
        return f"sum({column})", name, ColumnType.FLOAT
    if column_type is ColumnType.JSON:
        raise QueryError(f"{function} does not apply to JSON columns")
    return f"{function}({column})", name, column_type


def build_query(storage: Storage, model: Model, spec: dict[str, Any]) -> BuiltQuery:
    """SQL for a query spec; identifiers come only from the model, every value is a $n parameter."""
    unknown = set(spec) - {"columns", "where", "group_by", "aggregates", "order_by", "limit", "offset"}
    if unknown:
        raise QueryError(f"unknown query fields: {', '.join(sorted(unknown))}")
    args: list[Any] = []
    group_by = list(spec.get("group_by") or [])
    aggregates = spec.get("aggregates") or []
    if isinstance(aggregates, dict):  # {"alias": [fn, column]}
        aggregates = [[*spec_value, alias] for alias, spec_value in aggregates.items()]
    columns = spec.get("columns")
    if columns is None:
        columns = group_by if (group_by or aggregates) else [c.key for c in model.columns]
    if isinstance(columns, str) or isinstance(group_by, str):
        raise QueryError("columns and group_by are lists of column names")
    selected: list[str] = []
    result: list[tuple[str, ColumnType]] = []
    for key in columns:
        column, column_type = _resolve(model, key)
        if (group_by or aggregates) and key not in group_by:
            raise QueryError(f"column {key!r} must be in group_by when the query aggregates")
        selected.append(column)
        result.append((key, column_type))
    for item in aggregates:
        expression, name, column_type = _aggregate(model, item)
        selected.append(f"{expression} AS {quote_ident(name)}")
        result.append((name, column_type))
    if not selected:
        raise QueryError("the query selects no column")
    sql = f"SELECT {', '.join(selected)} FROM {storage.qualified_table}"
    where = spec.get("where") or []
    if isinstance(where, dict):  # {"column": value}: equalities
        where = [[key, "=", value] if value is not None else [key, "is null"] for key, value in where.items()]
    conditions = [_condition(model, clause, args) for clause in where]
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if group_by:
        sql += " GROUP BY " + ", ".join(_resolve(model, key)[0] for key in group_by)
    order = []
    aliases = {name for name, _ in result[len(columns) :]}
    for item in spec.get("order_by") or []:
        key, direction = (item[1:], "DESC") if isinstance(item, str) and item.startswith("-") else (item, "ASC")
        if isinstance(item, list | tuple) and len(item) == 2:
            key, direction = item[0], str(item[1]).upper()
            if direction not in ("ASC", "DESC"):
                raise QueryError(f"order direction is asc or desc, not {item[1]!r}")
        order.append(f"{quote_ident(key) if key in aliases else _resolve(model, key)[0]} {direction}")
    if order:
        sql += " ORDER BY " + ", ".join(order)
    for clause in ("limit", "offset"):
        value = spec.get(clause)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise QueryError(f"{clause} is a non-negative integer")
            args.append(value)
            sql += f" {clause.upper()} ${len(args)}"
    return BuiltQuery(sql, args, result)


async def run_query(
    catalog: Catalog, storage: Storage, spec: dict[str, Any]
) -> tuple[list[tuple[str, ColumnType]], list[list[Any]]]:
    """The query's result columns and its rows, as lists in column order."""
    built = build_query(storage, await catalog.model(storage.id), spec)
    rows = await catalog.pool.fetch(built.sql, *built.args)
    return built.columns, [list(row.values()) for row in rows]
