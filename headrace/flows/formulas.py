"""Formulas of ETL steps: parsed by the streaming ETL's parser, compiled to SQL by headrace.etl.sql."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.etl.expressions import FormulaError, Node, fields_of, parse
from headrace.etl.sql import SqlExpr, SqlScope, compile_formula
from headrace.models.types import ColumnType

__all__ = ["FormulaError", "SqlExpr", "compile_text", "fields_read"]


def fields_read(node: Node) -> set[str]:
    """The fields a formula reads (its @parameters are not fields)."""
    try:
        return fields_of(node)
    except AttributeError:  # a node type fields_of does not walk (a parameter): it reads no field
        return set()


def compile_text(
    text: str,
    columns: Mapping[str, tuple[str, ColumnType]],
    params: list[Any],
    values: Mapping[str, Any],
) -> tuple[SqlExpr, set[str]]:
    """The SQL of a formula over the given columns, and the fields it reads; FormulaError names an unknown field."""
    node = parse(text)
    read = fields_read(node)
    unknown = sorted(read - set(columns))
    if unknown:
        known = ", ".join(sorted(columns)[:30]) or "none"
        raise FormulaError(f"unknown field {unknown[0]!r} (the fields here: {known})")
    return compile_formula(node, SqlScope(columns=columns, params=params, values=values)), read
