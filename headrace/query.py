"""Reads a storage's rows back as JSON-ready dicts keyed by the original field names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.catalog.columns import SYSTEM_COLUMN_NAMES, TRANSACTION_COLUMN
from headrace.models import Model
from headrace.models.inference import convert
from headrace.models.model import OVERFLOW_COLUMN
from headrace.models.types import ColumnType
from headrace.postgres import quote_ident

# The system columns a stored row shows as its own fields: all of them but `_overflow` (its entries are spread
# into the row) and `_xid` (the writing transaction, internal to exports).
ROW_SYSTEM_COLUMNS = tuple(c for c in SYSTEM_COLUMN_NAMES if c not in (OVERFLOW_COLUMN, TRANSACTION_COLUMN))


def stored_columns(model: Model) -> str:
    """The SELECT list that reads a storage row whole: system columns, `_overflow`, then the model's columns."""
    return ", ".join(quote_ident(c) for c in (*ROW_SYSTEM_COLUMNS, OVERFLOW_COLUMN, *(c.name for c in model.columns)))


def stored_row(record: asyncpg.Record, model: Model) -> dict[str, Any]:
    """A row read with stored_columns() as fields by their original keys, system fields first.

    System fields win over a same-named key, and model columns over `_overflow` entries.
    """
    row: dict[str, Any] = {name: record[name] for name in ROW_SYSTEM_COLUMNS}
    for column in model.columns:
        row.setdefault(column.key, record[column.name])
    overflow = record[OVERFLOW_COLUMN]
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


# Bounds of one query: the rows it may return (the answer is built in memory) and the time it may take.
MAX_QUERY_ROWS = 100_000
QUERY_TIMEOUT_SECONDS = 30


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
    _check_spec(spec)
    args: list[Any] = []
    group_by = list(spec.get("group_by") or [])
    aggregates = _aggregates_of(spec)
    selected, result = _select_list(model, spec, group_by, aggregates)
    sql = f"SELECT {', '.join(selected)} FROM {storage.qualified_table}"
    sql += _where(model, spec, args)
    if group_by:
        sql += " GROUP BY " + ", ".join(_resolve(model, key)[0] for key in group_by)
    aliases = {name for name, _ in result[len(result) - len(aggregates) :]}  # the aggregates' names
    sql += _order(model, spec, aliases)
    sql += _page(spec, args)
    return BuiltQuery(sql, args, result)


def _check_spec(spec: dict[str, Any]) -> None:
    """The spec's fields are known ones, each of the shape it takes."""
    unknown = set(spec) - {"columns", "where", "group_by", "aggregates", "order_by", "limit", "offset"}
    if unknown:
        raise QueryError(f"unknown query fields: {', '.join(sorted(unknown))}")
    for key, kinds in (("columns", list), ("group_by", list), ("where", list | dict), ("aggregates", list | dict)):
        if spec.get(key) is not None and not isinstance(spec[key], kinds):
            raise QueryError(f"{key} must be a {'list' if kinds is list else 'list or an object'}")
    if spec.get("order_by") is not None and not isinstance(spec["order_by"], list):
        raise QueryError("order_by must be a list")


def _aggregates_of(spec: dict[str, Any]) -> list[Any]:
    """The aggregates as a list, {"alias": [fn, column]} becoming [fn, column, alias]."""
    aggregates = spec.get("aggregates") or []
    if isinstance(aggregates, dict):
        return [
            [*spec_value, alias] if isinstance(spec_value, list | tuple) else spec_value
            for alias, spec_value in aggregates.items()
        ]
    return list(aggregates)


def _select_list(
    model: Model, spec: dict[str, Any], group_by: list[Any], aggregates: list[Any]
) -> tuple[list[str], list[tuple[str, ColumnType]]]:
    """The SELECT expressions, then the result's columns (names and types): the columns, then the aggregates."""
    columns = spec.get("columns")
    if columns is None:
        columns = group_by if (group_by or aggregates) else [c.key for c in model.columns]
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
    return selected, result


def _where(model: Model, spec: dict[str, Any], args: list[Any]) -> str:
    """The WHERE clause of the filters ({"column": value} meaning equalities), its values added to `args`."""
    where = spec.get("where") or []
    if isinstance(where, dict):
        where = [[key, "=", value] if value is not None else [key, "is null"] for key, value in where.items()]
    conditions = [_condition(model, clause, args) for clause in where]
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _order(model: Model, spec: dict[str, Any], aliases: set[str]) -> str:
    """The ORDER BY clause: each item a column or an aggregate's alias, "-name" or [name, "asc"|"desc"]."""
    order = []
    for item in spec.get("order_by") or []:
        key, direction = _order_item(item)
        alias = isinstance(key, str) and key in aliases  # a key that is no string is refused by _resolve
        order.append(f"{quote_ident(key) if alias else _resolve(model, key)[0]} {direction}")
    return " ORDER BY " + ", ".join(order) if order else ""


def _order_item(item: Any) -> tuple[Any, str]:
    """An order_by item's key (checked as a column name later) and direction."""
    if not isinstance(item, str | list | tuple):
        raise QueryError(f"an order_by item is a column name or [name, 'asc'|'desc'], not {item!r}")
    if isinstance(item, str):
        return (item[1:], "DESC") if item.startswith("-") else (item, "ASC")
    if len(item) != 2:
        return item, "ASC"  # not a name: refused as a column
    direction = str(item[1]).upper()
    if direction not in ("ASC", "DESC"):
        raise QueryError(f"order direction is asc or desc, not {item[1]!r}")
    return item[0], direction


def _page(spec: dict[str, Any], args: list[Any]) -> str:
    """LIMIT (at most MAX_QUERY_ROWS, and one row past it when none is given) and OFFSET, their values in `args`."""
    for clause in ("limit", "offset"):
        value = spec.get(clause)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise QueryError(f"{clause} is a non-negative integer")
    limit = spec.get("limit")
    if limit is not None and limit > MAX_QUERY_ROWS:
        raise QueryError(f"limit is at most {MAX_QUERY_ROWS}; page through larger results with offset")
    # Without a limit, one row past the bound is asked for, to tell "exactly the bound" from "more".
    args.append(MAX_QUERY_ROWS + 1 if limit is None else limit)
    sql = f" LIMIT ${len(args)}"
    if spec.get("offset") is not None:
        args.append(spec["offset"])
        sql += f" OFFSET ${len(args)}"
    return sql


async def _fetch(pool: asyncpg.Pool, sql: str, args: list[Any]) -> list[asyncpg.Record]:
    """The rows, in a read-only transaction bounded in time."""
    for attempt in (1, 2):
        async with pool.acquire() as conn:
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = '{QUERY_TIMEOUT_SECONDS}s'")
                    return await conn.fetch(sql, *args)
            except asyncpg.QueryCanceledError as exc:
                raise QueryError(
                    f"the query ran past {QUERY_TIMEOUT_SECONDS} s; narrow it with filters or a limit"
                ) from exc
            except asyncpg.InvalidCachedStatementError:
                # The storage's table changed type since this connection prepared the statement; asyncpg retries
                # that by itself only outside a transaction, so this does, once.
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


async def run_query(
    catalog: Catalog, storage: Storage, spec: dict[str, Any]
) -> tuple[list[tuple[str, ColumnType]], list[list[Any]]]:
    """The query's result columns and its rows, as lists in column order."""
    built = build_query(storage, await catalog.model(storage.id), spec)
    rows = await _fetch(catalog.pool, built.sql, built.args)
    if spec.get("limit") is None and len(rows) > MAX_QUERY_ROWS:
        raise QueryError(
            f"the query returns more than {MAX_QUERY_ROWS} rows;"
            " add a limit (and offset to page), filters or aggregates"
        )
    return built.columns, [list(row.values()) for row in rows]
