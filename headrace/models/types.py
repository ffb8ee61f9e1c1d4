"""Column types and the one place their widening lattice is defined.

The lattice, from narrow to wide:

    integer ──► float ──┐
    date ──► datetime ──┼──► string
    boolean ────────────┤
    json ───────────────┘

Two types join to the narrowest type both fit in: integer+float is float, date+datetime is
datetime, and any other pair of different types is string. Nulls carry no type and never
widen anything. string is the top: every value has a faithful text form.
"""

from __future__ import annotations

from enum import StrEnum
from typing import overload


class ColumnType(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    STRING = "string"
    JSON = "json"

    @property
    def postgres(self) -> str:
        return _POSTGRES[self]

    @property
    def avro(self) -> str | dict[str, str]:
        return _AVRO[self]


_POSTGRES = {
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: "date",
    ColumnType.DATETIME: "timestamptz",
    ColumnType.STRING: "text",
    ColumnType.JSON: "jsonb",
}

_AVRO: dict[ColumnType, str | dict[str, str]] = {
    ColumnType.INTEGER: "long",
    ColumnType.FLOAT: "double",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: {"type": "int", "logicalType": "date"},
    ColumnType.DATETIME: {"type": "long", "logicalType": "timestamp-micros"},
    ColumnType.STRING: "string",
    # Avro has no JSON type; the value travels as its JSON text, marked so readers can tell.
    ColumnType.JSON: {"type": "string", "headrace.type": "json"},
}

# Each type's direct successor in the lattice; joining walks up until both meet.
_PARENT = {
    ColumnType.INTEGER: ColumnType.FLOAT,
    ColumnType.FLOAT: ColumnType.STRING,
    ColumnType.DATE: ColumnType.DATETIME,
    ColumnType.DATETIME: ColumnType.STRING,
    ColumnType.BOOLEAN: ColumnType.STRING,
    ColumnType.JSON: ColumnType.STRING,
}


def _ancestors(t: ColumnType) -> list[ColumnType]:
    chain = [t]
    while chain[-1] in _PARENT:
        chain.append(_PARENT[chain[-1]])
    return chain


def _join(a: ColumnType, b: ColumnType) -> ColumnType:
    b_chain = _ancestors(b)
    for t in _ancestors(a):
        if t in b_chain:
            return t
    return ColumnType.STRING


# Joins are looked up, not walked: inference calls widen once per value.
_JOIN = {(a, b): _join(a, b) for a in ColumnType for b in ColumnType}


@overload
def widen(current: ColumnType, incoming: ColumnType | None) -> ColumnType: ...
@overload
def widen(current: ColumnType | None, incoming: ColumnType) -> ColumnType: ...
@overload
def widen(current: ColumnType | None, incoming: ColumnType | None) -> ColumnType | None: ...
def widen(current: ColumnType | None, incoming: ColumnType | None) -> ColumnType | None:
    """The narrowest type that holds values of both types (None is the type of null)."""
    if current is None:
        return incoming
    if incoming is None or incoming is current:
        return current
    return _JOIN[current, incoming]


def fits(value_type: ColumnType | None, column_type: ColumnType) -> bool:
    """Whether a value of value_type can be stored in a column of column_type without changing it."""
    return widen(column_type, value_type) == column_type
