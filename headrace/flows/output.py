"""Writing a compiled step into its output storage: the model change its result's types need, and the SQL per mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headrace.catalog.storages import widening_expression
from headrace.flows.compile import CompiledStep, StepError
from headrace.flows.definitions import Output
from headrace.models import Column, Model, ModelChange
from headrace.models.identifiers import ColumnNamer
from headrace.models.types import ColumnType, widen
from headrace.postgres import quote_ident


def plan_change(model: Model, outputs: Sequence[tuple[str, ColumnType]], locked: bool) -> ModelChange:
    """What the output's model needs to hold these fields (S2 to S4): new columns, widened ones; a locked model refuses
    to change a type (the step fails naming the field: a whole statement cannot set single rows aside)."""
    change = ModelChange()
    namer = ColumnNamer({c.name for c in model.columns})
    room = model.max_columns - len(model.columns)
    for key, kind in outputs:
        column = model.by_key.get(key)
        if column is None:
            if room <= 0:
                raise StepError(
                    "output", f"the output storage is full ({model.max_columns} columns): no room for {key!r}"
                )
            change.added.append(Column(key, namer.name_for(key), kind))
            room -= 1
            continue
        target = widen(column.type, kind)
        if target == column.type:
            continue
        if locked:
            raise StepError(
                f"output.{key}",
                f"the output's model is locked: its {column.type.value} column cannot take {kind.value} values",
            )
        change.widened.append((column, Column(column.key, column.name, target)))
    return change


@dataclass(frozen=True)
class WriteSql:
    """The statements of one write, run in order in one transaction; the last one's row count is rows written."""

    statements: list[tuple[str, list[Any]]]


def _casts(compiled: CompiledStep, model: Model) -> list[tuple[str, str]]:
    """(quoted column, value SQL cast to the column's type) for each output field, in output order."""
    found = []
    for key, sql, kind in compiled.outputs:
        column = model.by_key[key]
        value = sql if column.type == kind else widening_expression(sql, kind, column.type)
        found.append((quote_ident(column.name), value))
    return found


def write_sql(compiled: CompiledStep, model: Model, output: Output, param_value: Any = None) -> WriteSql:
    """The SQL writing the step's rows by its load mode. A derived row is no event: `_event_id` and `_received_at`
    stay null (writing them cost a third of a large step's time), and the row's provenance is its `_xid`, which the
    step run records; `_inserted_at` and `_xid` (the export horizon) come from their defaults."""
    params = list(compiled.params)
    casts = _casts(compiled, model)
    targets = ", ".join(c for c, _ in casts)
    values = ", ".join(v for _, v in casts)
    source = f"FROM {compiled.final.name}"
    statements: list[tuple[str, list[Any]]] = []
    if output.mode == "replace":
        statements.append(_delete(compiled, model, param_value))
    if output.mode == "merge":
        keys = [model.by_key[k] for k in output.primary_key]
        key_values = ", ".join(v for (c, v) in casts if c in {quote_ident(k.name) for k in keys})
        conflict = ", ".join(quote_ident(k.name) for k in keys)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c, _ in casts if c not in conflict.split(", "))
        # A row a step updates is the step's now: the event it came from no longer describes it.
        system = "_event_id = NULL, _received_at = NULL, _inserted_at = now(), _xid = pg_current_xact_id()"
        updates = ", ".join(filter(None, [updates, system]))
        # One row per key, or the upsert would touch a row twice; an updated row gets a new _xid (exported again).
        sql = (
            f"{compiled.with_clause()}\nINSERT INTO {{table}} ({targets})"
            f" SELECT DISTINCT ON ({key_values}) {values} {source}"
            f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
    else:
        sql = f"{compiled.with_clause()}\nINSERT INTO {{table}} ({targets}) SELECT {values} {source}"
    statements.append((sql, params))
    return WriteSql(statements)


def _delete(compiled: CompiledStep, model: Model, param_value: Any) -> tuple[str, list[Any]]:
    """Replace empties the storage; a parametric step's replace removes only the rows of its value."""
    if compiled.param_column is None:
        return "DELETE FROM {table}", []
    key, _, kind = compiled.param_column
    column = model.by_key[key]
    value = widening_expression(f"$1::{kind.postgres}", kind, column.type) if column.type != kind else "$1"
    return f"DELETE FROM {{table}} WHERE {quote_ident(column.name)} = {value}", [param_value]
