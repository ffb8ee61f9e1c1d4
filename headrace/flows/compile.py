"""An ETL step compiled to one SQL statement: a CTE per stage over the input storage, every literal a parameter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headrace.flows.definitions import Aggregate, EtlStep, Join, Pivot, Stage
from headrace.flows.formulas import FormulaError, compile_text
from headrace.flows.params import typed_values, value_key
from headrace.models import Column
from headrace.models.inference import convert
from headrace.models.types import ColumnType, widen
from headrace.postgres import quote_ident

NUMERIC = (ColumnType.INTEGER, ColumnType.FLOAT)


class StepError(ValueError):
    """A step that cannot compile against the storages' models; `field` says where, as `stages[2].filter`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Source:
    """A storage as a step reads it: its table and its model's columns."""

    name: str
    table: str  # schema-qualified and quoted
    columns: Sequence[Column]


@dataclass
class Relation:
    """The rows after a stage: the CTE holding them, and each field's column alias and type in it."""

    name: str
    columns: dict[str, tuple[str, ColumnType | None]]

    def scope(self) -> dict[str, tuple[str, ColumnType]]:
        # Fields of the null type (a computed null) have no type a formula can work with: they read as text.
        return {k: (f"{self.name}.{a}", t or ColumnType.STRING) for k, (a, t) in self.columns.items()}


@dataclass
class Lineage:
    """Which input fields each output field comes from (`storage.field`), by formulas, aggregates and joins."""

    by_field: dict[str, set[str]] = field(default_factory=dict)

    def of(self, keys: set[str] | list[str]) -> set[str]:
        return set().union(*(self.by_field.get(k, set()) for k in keys)) if keys else set()


@dataclass
class CompiledStep:
    ctes: list[str]
    final: Relation
    params: list[Any]
    lineage: Lineage
    param_column: tuple[str, int, ColumnType] | None = None  # output key, $n, type

    @property
    def outputs(self) -> list[tuple[str, str, ColumnType]]:
        """(field, SQL expression over the final CTE, type) of every output field that has a type."""
        found = []
        if self.param_column is not None:
            key, number, kind = self.param_column
            found.append((key, f"${number}::{kind.postgres}", kind))
        found += [(k, f"{self.final.name}.{a}", t) for k, (a, t) in self.final.columns.items() if t is not None]
        return found

    def with_clause(self) -> str:
        return "WITH " + ",\n".join(self.ctes)

    def select_sql(self) -> str:
        """The step's rows, as the plan shows and previews them."""
        listed = ", ".join(f"{sql} AS {quote_ident(key)}" for key, sql, _ in self.outputs)
        return f"{self.with_clause()}\nSELECT {listed} FROM {self.final.name}"


class _Compiler:
    def __init__(self, sources: Mapping[str, Source], values: Mapping[str, Any], pivots: Mapping[int, list[Any]]):
        self.sources = sources
        self.values = values
        self.pivots = pivots
        self.params: list[Any] = []
        self.ctes: list[str] = []
        self.lineage = Lineage()
        self.counter = 0

    def alias(self) -> str:
        self.counter += 1
        return f"c{self.counter}"

    def param(self, value: Any, kind: ColumnType | None = None) -> str:
        self.params.append(value)
        return f"${len(self.params)}" + (f"::{kind.postgres}" if kind is not None else "")

    def cte(self, body: str, columns: dict[str, tuple[str, ColumnType | None]]) -> Relation:
        name = f"s{len(self.ctes)}"
        self.ctes.append(f"{name} AS ({body})")
        return Relation(name, columns)

    def source(self, storage: str, where: str | None, field_name: str, tag: str = "") -> Relation:
        found = self.sources.get(storage)
        if found is None:
            raise StepError(field_name, f"no storage named {storage!r}")
        columns: dict[str, tuple[str, ColumnType | None]] = {}
        listed = []
        for column in found.columns:
            alias = self.alias()
            listed.append(f"{quote_ident(column.name)} AS {alias}")
            columns[column.key] = (alias, column.type)
            if not tag:
                self.lineage.by_field[column.key] = {f"{storage}.{column.key}"}
        body = f"SELECT {', '.join(listed) or 'NULL AS c0'} FROM {found.table}" + (f" WHERE {where}" if where else "")
        return self.cte(body, columns)

    def formula(self, text: str, relation: Relation, where: str) -> tuple[str, ColumnType | None, set[str]]:
        try:
            expr, read = compile_text(text, relation.scope(), self.params, self.values)
        except FormulaError as exc:
            raise StepError(where, str(exc)) from None
        return expr.sql, expr.type, read

    def stages(self, relation: Relation, stages: Sequence[Stage], offset: int = 0) -> Relation:
        for index, stage in enumerate(stages, start=offset):
            where = f"stages[{index}].{stage.kind}"
            relation = getattr(self, f"_{stage.kind}")(relation, getattr(stage, stage.kind), where, index)
        return relation

    def _filter(self, relation: Relation, text: str, where: str, index: int) -> Relation:
        sql, kind, _ = self.formula(text, relation, where)
        if kind not in (ColumnType.BOOLEAN, None):
            raise StepError(where, f"a filter is true or false; this formula gives a {kind.value}")
        return self.cte(f"SELECT * FROM {relation.name} WHERE {sql}", dict(relation.columns))

    def _compute(self, relation: Relation, formulas: dict[str, str], where: str, index: int) -> Relation:
        for name, text in formulas.items():
            sql, kind, read = self.formula(text, relation, f"{where}.{name}")
            alias = self.alias()
            columns = dict(relation.columns)
            columns[name] = (alias, kind)
            self.lineage.by_field[name] = self.lineage.of(read)
            relation = self.cte(f"SELECT {relation.name}.*, {sql} AS {alias} FROM {relation.name}", columns)
        return relation

    def _known(self, relation: Relation, keys: Sequence[str], where: str) -> None:
        for key in keys:
            if key not in relation.columns:
                known = ", ".join(list(relation.columns)[:30]) or "none"
                raise StepError(where, f"unknown field {key!r} (the fields here: {known})")

    def _select(self, relation: Relation, keys: list[str], where: str, index: int) -> Relation:
        self._known(relation, keys, where)
        columns = {k: relation.columns[k] for k in keys}
        return self.cte(f"SELECT {', '.join(a for a, _ in columns.values())} FROM {relation.name}", columns)

    def _rename(self, relation: Relation, names: dict[str, str], where: str, index: int) -> Relation:
        self._known(relation, list(names), where)
        renamed = {names.get(k, k): v for k, v in relation.columns.items()}
        if len(renamed) != len(relation.columns):
            raise StepError(where, "two fields would have the same name")
        self.lineage.by_field.update({new: self.lineage.of([old]) for old, new in names.items()})
        return Relation(relation.name, renamed)  # names live in Python only: no CTE needed

    def aggregate_sql(
        self, function: str, operand: str | None, kind: ColumnType | None, where: str
    ) -> tuple[str, ColumnType]:
        if function == "count":
            return (f"count({operand})" if operand else "count(*)"), ColumnType.INTEGER
        if function == "count_distinct":
            return f"count(DISTINCT {operand})", ColumnType.INTEGER
        if function in ("sum", "avg"):
            if kind not in NUMERIC:
                raise StepError(where, f"{function} needs a number, not a {kind.value if kind else 'null'}")
            if function == "avg":
                return f"avg({operand})::double precision", ColumnType.FLOAT
            return (f"sum({operand})::bigint" if kind is ColumnType.INTEGER else f"sum({operand})"), kind
        if kind in (ColumnType.JSON, None):
            raise StepError(where, f"{function} cannot order {kind.value if kind else 'null'} values")
        if kind is ColumnType.BOOLEAN:
            return f"{'bool_and' if function == 'min' else 'bool_or'}({operand})", kind
        return f"{function}({operand})", kind

    def _aggregate(self, relation: Relation, spec: Aggregate, where: str, index: int) -> Relation:
        self._known(relation, spec.group_by, f"{where}.group_by")
        columns = {k: relation.columns[k] for k in spec.group_by}
        listed = [a for a, _ in columns.values()]
        for name, measure in spec.measures.items():
            place = f"{where}.measures.{name}"
            if name in columns:
                raise StepError(place, "a measure has the name of a group_by field")
            operand, kind = None, None
            if measure.column is not None:
                self._known(relation, [measure.column], place)
                operand, kind = relation.columns[measure.column]
                self.lineage.by_field[name] = self.lineage.of([measure.column])
            sql, result = self.aggregate_sql(measure.function, operand, kind, place)
            alias = self.alias()
            listed.append(f"{sql} AS {alias}")
            columns[name] = (alias, result)
        group = f" GROUP BY {', '.join(a for a, _ in (relation.columns[k] for k in spec.group_by))}"
        return self.cte(f"SELECT {', '.join(listed)} FROM {relation.name}{group if spec.group_by else ''}", columns)

    def _join(self, relation: Relation, spec: Join, where: str, index: int) -> Relation:
        other = self.source(spec.storage, None, f"{where}.storage", tag="join")
        self._known(relation, list(spec.on), f"{where}.on")
        self._known(other, list(spec.on.values()), f"{where}.on")
        conditions, columns = [], dict(relation.columns)
        listed = [f"l.{a}" for a, _ in relation.columns.values()]
        for left, right in spec.on.items():
            (la, lt), (ra, rt) = relation.columns[left], other.columns[right]
            if lt != rt and not (lt in NUMERIC and rt in NUMERIC):
                raise StepError(f"{where}.on.{left}", f"cannot match a {_name(lt)} with a {_name(rt)} ({right})")
            conditions.append(f"l.{la} = r.{ra}")
            if spec.how in ("right", "full"):  # rows only the other side has keep their key
                alias = self.alias()
                listed.append(f"coalesce(l.{la}, r.{ra}) AS {alias}")
                columns[left] = (alias, widen(lt, rt))
        brought = spec.columns if spec.columns is not None else [k for k in other.columns if k not in spec.on.values()]
        self._known(other, brought, f"{where}.columns")
        prefix = spec.prefix if spec.prefix is not None else f"{spec.storage}_"
        for key in brought:
            name = key if key not in columns else prefix + key
            if name in columns:
                raise StepError(f"{where}.columns", f"the field {name!r} is there already; set another prefix")
            alias = self.alias()
            listed.append(f"r.{other.columns[key][0]} AS {alias}")
            columns[name] = (alias, other.columns[key][1])
            self.lineage.by_field[name] = {f"{spec.storage}.{key}"}
        kind = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN"}[spec.how]
        body = f"SELECT {', '.join(listed)} FROM {relation.name} l {kind} {other.name} r ON {' AND '.join(conditions)}"
        return self.cte(body, columns)

    def _pivot(self, relation: Relation, spec: Pivot, where: str, index: int) -> Relation:
        self._known(relation, [*spec.index, spec.key], where)
        if spec.value is not None:
            self._known(relation, [spec.value], f"{where}.value")
        key_alias, key_type = relation.columns[spec.key]
        operand, kind = relation.columns[spec.value] if spec.value is not None else (None, None)
        columns = {k: relation.columns[k] for k in spec.index}
        listed = [a for a, _ in columns.values()]
        values = spec.values if spec.values is not None else self.pivots.get(index, [])
        for value in values:
            name = spec.prefix + value_key(value)
            if name in columns:
                raise StepError(where, f"the pivoted column {name!r} is an index field too")
            sql, result = self.aggregate_sql(spec.function, operand, kind, where)
            alias = self.alias()
            match = self.param(_as_type(value, key_type), key_type or ColumnType.STRING)
            listed.append(f"{sql} FILTER (WHERE {key_alias} = {match}) AS {alias}")
            columns[name] = (alias, result)
            self.lineage.by_field[name] = self.lineage.of([spec.key] + ([spec.value] if spec.value else []))
        group = f" GROUP BY {', '.join(a for a, _ in (relation.columns[k] for k in spec.index))}" if spec.index else ""
        return self.cte(f"SELECT {', '.join(listed) or 'NULL AS c0'} FROM {relation.name}{group}", columns)


def _as_type(value: Any, kind: ColumnType | None) -> Any:
    """A declared pivot value as its key column's Python value (a date given as text becomes a date)."""
    if isinstance(value, str) and kind in (ColumnType.DATE, ColumnType.DATETIME):
        converted = convert(value, kind)
        if converted is None:
            raise StepError("pivot.values", f"{value!r} is not a {kind.value}")
        return converted
    return value


def _name(kind: ColumnType | None) -> str:
    return kind.value if kind is not None else "null"


def compile_step(
    step: EtlStep,
    sources: Mapping[str, Source],
    values: Mapping[str, Any] | None = None,
    pivots: Mapping[int, list[Any]] | None = None,
    xid_range: tuple[int, int] | None = None,
) -> CompiledStep:
    """The step's SELECT as CTEs. `values`: the @parameter's value of this run; `pivots`: values read for pivots
    that declare none (by stage index); `xid_range`: an incremental run's [from, to) transactions of the input."""
    compiler = _Compiler(sources, values or {}, pivots or {})
    where = None
    if xid_range is not None:
        start, end = compiler.param(str(xid_range[0])), compiler.param(str(xid_range[1]))
        where = f"_xid >= {start}::text::xid8 AND _xid < {end}::text::xid8"
    stages = step.stages
    split = next((i for i, s in enumerate(stages) if s.aggregate is not None), None)
    if xid_range is not None and split is not None:
        relation = _touched_groups(compiler, step, split, where)
        relation = compiler.stages(relation, stages[split:], offset=split)
    else:
        relation = compiler.source(step.input, where, "input")
        relation = compiler.stages(relation, stages)
    compiled = CompiledStep(compiler.ctes, relation, compiler.params, compiler.lineage)
    param = step.param
    if param is not None:
        name, spec = param
        key = spec.column or name
        if key in relation.columns:
            raise StepError(f"params.{name}", f"the output has a field {key!r} already; set the parameter's column")
        value = (values or {}).get(name)
        kind = _param_type(value)
        compiled.param_column = (key, len(compiler.params) + 1, kind)
        compiler.params.append(value)
    return compiled


def _param_type(value: Any) -> ColumnType:
    return typed_values([value])[1] if value is not None else ColumnType.STRING


def _touched_groups(compiler: _Compiler, step: EtlStep, split: int, delta_where: str | None) -> Relation:
    """For an incremental aggregate: the rows before the aggregate, of every group the new input rows touch."""
    spec = step.stages[split].aggregate
    assert spec is not None
    delta = compiler.stages(compiler.source(step.input, delta_where, "input"), step.stages[:split])
    full = compiler.stages(compiler.source(step.input, None, "input", tag="full"), step.stages[:split])
    compiler._known(full, spec.group_by, f"stages[{split}].aggregate.group_by")
    match = " AND ".join(f"d.{delta.columns[k][0]} IS NOT DISTINCT FROM f.{full.columns[k][0]}" for k in spec.group_by)
    exists = f"EXISTS (SELECT 1 FROM {delta.name} d WHERE {match})" if spec.group_by else "TRUE"
    return compiler.cte(f"SELECT f.* FROM {full.name} f WHERE {exists}", dict(full.columns))


def pivot_values_sql(
    step: EtlStep, sources: Mapping[str, Source], index: int, values: Mapping[str, Any] | None = None
) -> tuple[str, list[Any]]:
    """The query reading a pivot's values when it declares none: its key's distinct values, at most max_values + 1."""
    compiler = _Compiler(sources, values or {}, {})
    relation = compiler.stages(compiler.source(step.input, None, "input"), step.stages[:index])
    spec = step.stages[index].pivot
    assert spec is not None
    compiler._known(relation, [spec.key], f"stages[{index}].pivot")
    key = relation.columns[spec.key][0]
    sql = (
        f"WITH {', '.join(compiler.ctes)} SELECT DISTINCT {key} FROM {relation.name}"
        f" WHERE {key} IS NOT NULL ORDER BY 1 LIMIT {spec.max_values + 1}"
    )
    return sql, compiler.params
