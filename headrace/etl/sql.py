"""The formula language compiled to SQL: the same formulas the stream evaluates in Python, run inside Postgres.

Every construct compiles to an expression with the Python evaluator's semantics (headrace.etl.expressions): nulls
propagate, `%` is floor modulo, `/` is true division, `and`/`or`/`not` use the same truth of values, `in` is false
(not null) when nothing matches, `substr` is 1-based and clamps, `round` without digits gives an integer. Types are
checked while compiling, so a formula that cannot work on its columns is refused before anything runs, naming the
field or function; every literal and parameter value becomes a bound parameter (`$n`), never SQL text. Where the
stream rejects one record (division by zero, text that is no number), the statement fails with Postgres' error.

Run compiled statements after GENERIC_PLANS: with a custom plan Postgres folds expressions of known parameter
values while planning, even in a CASE branch that is never taken (`if(@n = 0, 0, 100 / @n)` would divide by zero).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from headrace.etl.expressions import (
    FUNCTIONS,
    Binary,
    Call,
    Field,
    FormulaError,
    InList,
    IsNull,
    Literal,
    Node,
    Param,
    Unary,
)
from headrace.models.types import ColumnType

GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"
NUMERIC = (ColumnType.INTEGER, ColumnType.FLOAT)
TEMPORAL = (ColumnType.DATE, ColumnType.DATETIME)
# The ISO-8601 text Python gives a UTC instant (headrace.models.inference.format_datetime), built in SQL.
_ISO_DATETIME = (
    "(to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN extract(microseconds FROM {0})::bigint"
    " % 1000000 <> 0 THEN to_char({0} AT TIME ZONE 'UTC', '.US') ELSE '' END || 'Z')"
)


@dataclass(frozen=True)
class SqlExpr:
    sql: str
    type: ColumnType | None  # None: the null literal, which takes any type


@dataclass
class SqlScope:
    """What a formula may read: fields by key (their SQL and type), the statement's parameters, `@name` values."""

    columns: Mapping[str, tuple[str, ColumnType]]
    params: list[Any] = field(default_factory=list)
    values: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, column_type: ColumnType) -> SqlExpr:
        """A value as a typed parameter, so Postgres never guesses (nor parses) it."""
        self.params.append(value)
        return SqlExpr(f"${len(self.params)}::{column_type.postgres}", column_type)


def value_type(value: Any) -> ColumnType | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return ColumnType.BOOLEAN
    if isinstance(value, int):
        return ColumnType.INTEGER
    if isinstance(value, float):
        return ColumnType.FLOAT
    if isinstance(value, datetime):
        return ColumnType.DATETIME
    if isinstance(value, date):
        return ColumnType.DATE
    if isinstance(value, str):
        return ColumnType.STRING
    return ColumnType.JSON


def _expect(expr: SqlExpr, allowed: tuple[ColumnType, ...], what: str) -> None:
    if expr.type is not None and expr.type not in allowed:
        names = " or ".join(t.value for t in allowed)
        raise FormulaError(f"{what} needs {names}, not {expr.type.value}")


def _common(exprs: list[SqlExpr], what: str) -> ColumnType | None:
    """The one type several branches share (integer with float is float, date with datetime is datetime)."""
    kinds = {e.type for e in exprs if e.type is not None}
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= set(NUMERIC):
        return ColumnType.FLOAT
    if kinds <= set(TEMPORAL):
        return ColumnType.DATETIME
    raise FormulaError(f"{what} mixes {' and '.join(sorted(k.value for k in kinds))}")


def _cast(expr: SqlExpr, target: ColumnType | None) -> str:
    if target is None or expr.type is target:
        return expr.sql
    return f"({expr.sql})::{target.postgres}"


def as_text(expr: SqlExpr) -> str:
    """A value's text as Python's to_text gives it (true/false, 1.0 for a whole float, ISO instants with Z)."""
    kind = expr.type
    if kind is None or kind is ColumnType.STRING:
        return f"({expr.sql})::text"
    if kind is ColumnType.BOOLEAN:
        return f"CASE WHEN {expr.sql} THEN 'true' WHEN NOT {expr.sql} THEN 'false' END"
    if kind is ColumnType.FLOAT:
        v = expr.sql
        return (
            f"CASE WHEN {v} = trunc({v}) AND abs({v}) < 1e16 THEN trunc({v})::bigint::text || '.0' ELSE {v}::text END"
        )
    if kind is ColumnType.DATETIME:
        return _ISO_DATETIME.format(expr.sql)
    if kind is ColumnType.JSON:
        return f"(({expr.sql})::jsonb)::text"
    return f"({expr.sql})::text"


def truth(expr: SqlExpr) -> str:
    """A value as a condition, with the Python evaluator's truth: zero and empty text are false, null stays null."""
    kind, v = expr.type, expr.sql
    if kind is None:
        return "NULL::boolean"
    if kind is ColumnType.BOOLEAN:
        return v
    if kind in NUMERIC:
        return f"({v} <> 0)"
    if kind is ColumnType.STRING:
        return f"({v} <> '')"
    if kind is ColumnType.JSON:
        return f"CASE WHEN {v} IS NULL THEN NULL ELSE {v} NOT IN ('[]'::jsonb, '{{}}'::jsonb, '\"\"'::jsonb) END"
    return f"CASE WHEN {v} IS NULL THEN NULL ELSE true END"


def compile_formula(node: Node, scope: SqlScope) -> SqlExpr:
    """The SQL of a formula over the scope's columns; FormulaError names what does not type-check."""
    if isinstance(node, Literal):
        kind = value_type(node.value)
        return SqlExpr("NULL", None) if kind is None else scope.bind(node.value, kind)
    if isinstance(node, Field):
        if node.name not in scope.columns:
            raise FormulaError(f"unknown field {node.name!r}; known: {', '.join(sorted(scope.columns)) or 'none'}")
        sql, kind = scope.columns[node.name]
        return SqlExpr(sql, kind)
    if isinstance(node, Param):
        if node.name not in scope.values:
            raise FormulaError(f"unknown parameter @{node.name}")
        value = scope.values[node.name]
        kind = value_type(value)
        return SqlExpr("NULL", None) if kind is None else scope.bind(value, kind)
    if isinstance(node, Unary):
        operand = compile_formula(node.operand, scope)
        if node.op == "not":
            return SqlExpr(f"(NOT {truth(operand)})", ColumnType.BOOLEAN)
        _expect(operand, NUMERIC, "-")
        return SqlExpr(f"(- {operand.sql})", operand.type)
    if isinstance(node, IsNull):
        operand = compile_formula(node.operand, scope)
        return SqlExpr(f"({operand.sql} IS {'NOT ' if node.negated else ''}NULL)", ColumnType.BOOLEAN)
    if isinstance(node, InList):
        return _in_list(node, scope)
    if isinstance(node, Binary):
        return _binary(node, scope)
    assert isinstance(node, Call)
    return _call(node, scope)


def _in_list(node: InList, scope: SqlScope) -> SqlExpr:
    operand = compile_formula(node.operand, scope)
    options = [compile_formula(option, scope) for option in node.options]
    kinds = {e.type for e in (operand, *options)} - {None}
    if kinds & set(TEMPORAL) and kinds <= {*TEMPORAL, ColumnType.STRING}:
        # As in comparisons: a date column against ISO text compares the instants.
        kind: ColumnType | None = ColumnType.DATETIME if ColumnType.DATETIME in kinds else ColumnType.DATE
    else:
        kind = _common([operand, *options], "in (…)")
    # A null option never matches (Python's ==), and nothing matching is false, not null.
    tests = " OR ".join(f"coalesce({_cast(operand, kind)} = {_cast(o, kind)}, false)" for o in options)
    found = f"({tests})"
    test = f"(NOT {found})" if node.negated else found
    return SqlExpr(f"CASE WHEN {operand.sql} IS NULL THEN NULL ELSE {test} END", ColumnType.BOOLEAN)


def _binary(node: Binary, scope: SqlScope) -> SqlExpr:
    left, right = compile_formula(node.left, scope), compile_formula(node.right, scope)
    op = node.op
    if op in ("and", "or"):
        # CASE, not AND/OR: Postgres may evaluate either side first, and the right side only runs when needed
        # (as in the evaluator), so `i != 0 and 1 / i > 0` never divides by zero.
        decided = "false" if op == "and" else "true"
        lt, rt = truth(left), truth(right)
        return SqlExpr(
            f"(CASE WHEN ({lt}) IS {decided.upper()} THEN {decided} WHEN ({rt}) IS {decided.upper()} THEN {decided}"
            f" WHEN ({lt}) IS NULL OR ({rt}) IS NULL THEN NULL ELSE {'true' if op == 'and' else 'false'} END)",
            ColumnType.BOOLEAN,
        )
    if op in ("=", "!=", "<", "<=", ">", ">="):
        return _comparison(op, left, right)
    if op == "+" and ColumnType.STRING in (left.type, right.type):
        _expect(left, (ColumnType.STRING,), "+ on text")
        _expect(right, (ColumnType.STRING,), "+ on text")
        return SqlExpr(f"({left.sql} || {right.sql})", ColumnType.STRING)
    _expect(left, NUMERIC, op)
    _expect(right, NUMERIC, op)
    if op == "/":
        return SqlExpr(f"({left.sql}::double precision / {right.sql})", ColumnType.FLOAT)
    kind = ColumnType.FLOAT if ColumnType.FLOAT in (left.type, right.type) else ColumnType.INTEGER
    if left.type is None and right.type is None:
        kind = ColumnType.INTEGER
    if op == "%":
        # Python's modulo takes the divisor's sign (floor division); SQL's takes the dividend's.
        a, b = _cast(left, ColumnType.FLOAT), _cast(right, ColumnType.FLOAT)
        floor_mod = f"({a} - {b} * floor({a} / {b}))"
        if kind is ColumnType.INTEGER:
            return SqlExpr(f"({left.sql} - {right.sql} * floor({left.sql}::numeric / {right.sql})::bigint)", kind)
        return SqlExpr(floor_mod, kind)
    return SqlExpr(f"({left.sql} {op} {right.sql})", kind)


def _comparison(op: str, left: SqlExpr, right: SqlExpr) -> SqlExpr:
    sql_op = "<>" if op == "!=" else op
    kinds = {t for t in (left.type, right.type) if t is not None}
    if len(kinds) > 1 and not kinds <= set(NUMERIC):
        temporal = kinds & set(TEMPORAL)
        if temporal and kinds <= {*TEMPORAL, ColumnType.STRING}:
            # Dates travel as ISO text on the stream: compare a date column with text as the instant it names.
            target = ColumnType.DATETIME if ColumnType.DATETIME in kinds else ColumnType.DATE
            return SqlExpr(f"({_cast(left, target)} {sql_op} {_cast(right, target)})", ColumnType.BOOLEAN)
        raise FormulaError(f"cannot compare {left.type} with {right.type}")
    if op not in ("=", "!=") and kinds & {ColumnType.BOOLEAN, ColumnType.JSON}:
        raise FormulaError(f"{op} compares numbers, text or dates, not {', '.join(sorted(k.value for k in kinds))}")
    return SqlExpr(f"({left.sql} {sql_op} {right.sql})", ColumnType.BOOLEAN)


def _text_function(sql: Callable[[str], str]) -> Callable[[list[SqlExpr]], SqlExpr]:
    return lambda args: SqlExpr(sql(as_text(args[0])), ColumnType.STRING)


def _length(args: list[SqlExpr]) -> SqlExpr:
    value = args[0]
    if value.type is ColumnType.JSON:
        v = value.sql
        return SqlExpr(
            f"CASE jsonb_typeof({v}) WHEN 'array' THEN jsonb_array_length({v}) WHEN 'object' THEN"
            f" (SELECT count(*) FROM jsonb_object_keys({v}))::int ELSE char_length({as_text(value)}) END::bigint",
            ColumnType.INTEGER,
        )
    return SqlExpr(f"char_length({as_text(value)})::bigint", ColumnType.INTEGER)


def _coalesce(args: list[SqlExpr]) -> SqlExpr:
    kind = _common(args, "coalesce()")
    return SqlExpr(f"coalesce({', '.join(_cast(a, kind) for a in args)})", kind)


def _substr(args: list[SqlExpr]) -> SqlExpr:
    for number in args[1:]:
        _expect(number, NUMERIC, "substr()")
    # SQL's substr takes int positions: clamp (past the end, both give the empty text).
    start = f"least(greatest(({args[1].sql})::bigint, 1), 2147483647)::int"
    if len(args) == 2:
        return SqlExpr(f"substr({as_text(args[0])}, {start})", ColumnType.STRING)
    # Python slices from max(start - 1, 0), so a start below 1 does not shorten the length as SQL's would.
    length = f"least(greatest(({args[2].sql})::bigint, 0), 2147483647)::int"
    return SqlExpr(f"substr({as_text(args[0])}, {start}, {length})", ColumnType.STRING)


def _round(args: list[SqlExpr]) -> SqlExpr:
    _expect(args[0], NUMERIC, "round()")
    value = _cast(args[0], ColumnType.FLOAT)
    if len(args) == 1:
        # Python's round() of a float rounds half to even, as Postgres' round(double precision) does.
        return SqlExpr(f"round({value})::bigint", ColumnType.INTEGER)
    _expect(args[1], NUMERIC, "round()")
    scale = f"power(10::double precision, ({args[1].sql})::int)"
    return SqlExpr(f"(round({value} * {scale}) / {scale})", ColumnType.FLOAT)


def _numeric(
    name: str, sql: Callable[[str], str], result: ColumnType | None = None
) -> Callable[[list[SqlExpr]], SqlExpr]:
    def compile_call(args: list[SqlExpr]) -> SqlExpr:
        _expect(args[0], NUMERIC, f"{name}()")
        return SqlExpr(sql(args[0].sql), result or args[0].type)

    return compile_call


def _to_int(args: list[SqlExpr]) -> SqlExpr:
    value = args[0]
    if value.type is ColumnType.BOOLEAN:
        return SqlExpr(f"({value.sql})::int::bigint", ColumnType.INTEGER)
    if value.type is ColumnType.STRING:
        v = value.sql
        return SqlExpr(
            f"CASE WHEN {v} ~ '^\\s*[+-]?[0-9]+\\s*$' THEN trim({v})::bigint"
            f" ELSE trunc(({v})::double precision)::bigint END",
            ColumnType.INTEGER,
        )
    _expect(value, NUMERIC, "int()")
    return SqlExpr(f"trunc(({value.sql})::double precision)::bigint", ColumnType.INTEGER)


def _to_float(args: list[SqlExpr]) -> SqlExpr:
    _expect(args[0], (*NUMERIC, ColumnType.STRING, ColumnType.BOOLEAN), "float()")
    value = args[0]
    sql = (
        f"({value.sql})::int::double precision" if value.type is ColumnType.BOOLEAN else _cast(value, ColumnType.FLOAT)
    )
    return SqlExpr(sql, ColumnType.FLOAT)


def _instant(value: SqlExpr, what: str) -> str:
    _expect(value, (*TEMPORAL, ColumnType.STRING), what)
    return _cast(value, ColumnType.DATETIME)


def _date_trunc(args: list[SqlExpr]) -> SqlExpr:
    _expect(args[0], (ColumnType.STRING,), "date_trunc() unit")
    instant = _instant(args[1], "date_trunc()")
    return SqlExpr(f"(date_trunc({args[0].sql}, {instant} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')", ColumnType.DATETIME)


def _date(args: list[SqlExpr]) -> SqlExpr:
    if args[0].type is ColumnType.DATE:
        return args[0]
    return SqlExpr(f"({_instant(args[0], 'date()')} AT TIME ZONE 'UTC')::date", ColumnType.DATE)


def _part(field: str) -> Callable[[list[SqlExpr]], SqlExpr]:
    def compile_call(args: list[SqlExpr]) -> SqlExpr:
        value = args[0]
        source = value.sql if value.type is ColumnType.DATE else f"({_instant(value, field + '()')} AT TIME ZONE 'UTC')"
        return SqlExpr(f"extract({field} FROM {source})::bigint", ColumnType.INTEGER)

    return compile_call


def _if(args: list[SqlExpr]) -> SqlExpr:
    kind = _common(args[1:], "if()")
    condition = args[0].sql if args[0].type is ColumnType.BOOLEAN else f"({args[0].sql}) IS TRUE AND false"
    return SqlExpr(f"CASE WHEN {condition} THEN {_cast(args[1], kind)} ELSE {_cast(args[2], kind)} END", kind)


def _replace(args: list[SqlExpr]) -> SqlExpr:
    text, old, new = (as_text(a) for a in args)
    # Python's str.replace with an empty pattern inserts between every character; SQL's replace() would not.
    return SqlExpr(
        f"CASE WHEN {old} = '' THEN regexp_replace({text}, '', replace({new}, '\\', '\\\\'), 'g')"
        f" ELSE replace({text}, {old}, {new}) END",
        ColumnType.STRING,
    )


_CALLS: dict[str, Callable[[list[SqlExpr]], SqlExpr]] = {
    "lower": _text_function(lambda t: f"lower({t})"),
    "upper": _text_function(lambda t: f"upper({t})"),
    "trim": _text_function(lambda t: f"btrim({t}, E' \\t\\n\\r\\f\\v')"),
    "string": _text_function(lambda t: t),
    "length": _length,
    "concat": lambda args: SqlExpr(f"concat({', '.join(as_text(a) for a in args)})", ColumnType.STRING),
    "coalesce": _coalesce,
    "substr": _substr,
    "replace": _replace,
    "round": _round,
    "abs": _numeric("abs", lambda v: f"abs({v})"),
    "floor": _numeric("floor", lambda v: f"floor({v})::bigint", ColumnType.INTEGER),
    "ceil": _numeric("ceil", lambda v: f"ceil({v})::bigint", ColumnType.INTEGER),
    "int": _to_int,
    "float": _to_float,
    "date_trunc": _date_trunc,
    "date": _date,
    "year": _part("year"),
    "month": _part("month"),
    "day": _part("day"),
    "now": lambda args: SqlExpr("now()", ColumnType.DATETIME),
    "if": _if,
}
assert set(_CALLS) == set(FUNCTIONS), "every function of the language compiles to SQL"


def _call(node: Call, scope: SqlScope) -> SqlExpr:
    args = [compile_formula(a, scope) for a in node.args]
    try:
        compiled = _CALLS[node.function](args)
    except FormulaError as exc:
        raise FormulaError(f"{node.function}(): {exc}") from exc
    if not FUNCTIONS[node.function].null_in_null_out or not args:
        return compiled
    # Like the evaluator, a null argument gives null without calling the function.
    nulls = " OR ".join(f"({a.sql}) IS NULL" for a in args)
    return SqlExpr(f"CASE WHEN {nulls} THEN NULL ELSE {compiled.sql} END", compiled.type)


def formula_type(
    node: Node, columns: Mapping[str, ColumnType], values: Mapping[str, Any] | None = None
) -> ColumnType | None:
    """The type a formula gives over columns of these types; FormulaError when it does not type-check."""
    scope = SqlScope({key: (f"c{i}", kind) for i, (key, kind) in enumerate(columns.items())}, [], values or {})
    return compile_formula(node, scope).type
