"""One formula language, two back ends: every formula gives the same values evaluated in Python on the stream and
compiled to SQL in Postgres, over the same rows (nulls, zeros, negative numbers, text, dates and datetimes); where
Python rejects a record (division by zero, text that is no number), the SQL statement fails too."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.etl import EvaluationError, parse
from headrace.etl.expressions import FormulaError, evaluate
from headrace.etl.sql import SqlScope, compile_formula, formula_type
from headrace.models.inference import format_datetime
from headrace.models.types import ColumnType
from headrace.postgres import quote_ident

COLUMNS = {
    "i": ColumnType.INTEGER,
    "j": ColumnType.INTEGER,
    "f": ColumnType.FLOAT,
    "g": ColumnType.FLOAT,
    "s": ColumnType.STRING,
    "t": ColumnType.STRING,
    "b": ColumnType.BOOLEAN,
    "d": ColumnType.DATE,
    "ts": ColumnType.DATETIME,
    "Nb of items": ColumnType.INTEGER,
}

FORMULAS = [
    # arithmetic, with Python's true division and floor modulo, nulls and zeros
    "i + j",
    "i - j",
    "i * j",
    "i / j",
    "i % j",
    "f % g",
    "i % g",
    "-i",
    "i + f",
    "f * g",
    "f / g",
    "`Nb of items` * f",
    "(i + 1) * (j - 2) % 7",
    "i / 0",
    "i * 1000000000000",
    # comparisons, including dates against their ISO text
    "i = j",
    "i != j",
    "i < f",
    "s < t",
    "s = 'abc'",
    "d >= '2024-03-01'",
    "ts < '2024-06-01T00:00:00Z'",
    "d = d",
    "b = true",
    "b != false",
    # three-valued logic on the truth of values
    "b and i > 0",
    "b or s = 'x'",
    "not b",
    "not i",
    "not s",
    "i and s",
    "f or b",
    "i > 0 and j > 0 or b",
    "not (i > 3 and b)",
    # in, is null
    "i in (1, 2, 3)",
    "s in ('abc', 'x', null)",
    "i not in (0, j)",
    "f is null",
    "s is not null",
    "d in ('2024-01-05')",
    # text
    "lower(s)",
    "upper(t)",
    "trim(t)",
    "length(s)",
    "concat(s, '-', i, '-', b)",
    "s + t",
    "string(f)",
    "string(i)",
    "string(b)",
    "string(d)",
    "string(ts)",
    "substr(s, 2)",
    "substr(s, 0, 2)",
    "substr(s, -3, 4)",
    "substr(t, j)",
    "replace(s, 'a', 'AA')",
    "replace(s, '', '.')",
    "coalesce(s, t, 'none')",
    "coalesce(i, f)",
    # numbers
    "round(f)",
    "round(f, 2)",
    "round(i, -1)",
    "abs(i)",
    "abs(f)",
    "floor(f)",
    "ceil(f)",
    "int(f)",
    "int(s)",
    "int(b)",
    "float(i)",
    "float(t)",
    "float(b)",
    # dates
    "date(ts)",
    "date(d)",
    "date_trunc('month', ts)",
    "date_trunc('day', d)",
    "date_trunc('hour', ts)",
    # if
    "if(b, i, f)",
    "if(i > 2, 'big', 'small')",
    "if(s = 'abc', d, ts)",
]
# Texts that are numbers and texts that are not: int()/float() of them succeed or fail alike in both.
TEXTS = ["abc", "x", "", "  12 ", "-7", "1e3", "2.5", "héllo wörld", "a,b;c", "AbC dEf"]


def rows(count: int = 60) -> list[dict[str, Any]]:
    rng = random.Random(13)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.12 else value

    out = []
    for n in range(count):
        day = date(2024, 1, 1) + timedelta(days=rng.randrange(0, 366))
        instant = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 366 * 86400))
        if rng.random() < 0.3:
            instant += timedelta(microseconds=rng.randrange(1, 999_999))
        out.append(
            {
                "id": n,
                "i": maybe(rng.choice([0, 1, 2, 3, -1, -7, 10, 123456, rng.randrange(-1000, 1000)])),
                "j": maybe(rng.choice([0, 1, 2, 3, -2, 5, rng.randrange(-50, 50)])),
                "f": maybe(rng.choice([0.0, 1.5, -2.25, 100.0, 3.14159, -0.5, rng.uniform(-1000, 1000)])),
                "g": maybe(rng.choice([0.0, 2.0, -3.5, 0.25, rng.uniform(-10, 10)])),
                "s": maybe(rng.choice(TEXTS)),
                "t": maybe(rng.choice(TEXTS)),
                "b": maybe(rng.choice([True, False])),
                "d": maybe(day),
                "ts": maybe(instant),
                "Nb of items": maybe(rng.randrange(0, 20)),
            }
        )
    return out


def as_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the stream holds it: JSON values, dates and datetimes as ISO-8601 text."""
    record = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = format_datetime(value)
        elif isinstance(value, date):
            value = value.isoformat()
        record[key] = value
    return record


def normal(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def same(python: Any, sql: Any) -> bool:
    if python is EvaluationError or sql is EvaluationError:
        return python is sql
    if isinstance(sql, datetime) and isinstance(python, str) and len(python) == 10:
        # if()/coalesce() of a date and a datetime: a datetime column, where the stream's date text lands at midnight.
        python = f"{python}T00:00:00Z"
    sql = normal(sql)
    if isinstance(python, float) or isinstance(sql, float):
        if python is None or sql is None or isinstance(python, bool) or isinstance(sql, bool):
            return python is sql
        return math.isclose(float(python), float(sql), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(python, str) and isinstance(sql, str) and python.endswith("Z") and sql.endswith("Z"):
        return python == sql
    return python == sql and type(python) is type(sql)


@pytest.fixture(scope="module")
async def table(pool: asyncpg.Pool) -> Any:
    name = f"formula_rows_{random.randrange(10**9)}"
    columns = ", ".join(f"{quote_ident(k)} {t.postgres}" for k, t in COLUMNS.items())
    await pool.execute(f"CREATE TABLE public.{name} (id int PRIMARY KEY, {columns})")
    data = rows()
    keys = ["id", *COLUMNS]
    await pool.copy_records_to_table(
        name, schema_name="public", columns=keys, records=[tuple(r[k] for k in keys) for r in data]
    )
    yield name, data
    await pool.execute(f"DROP TABLE public.{name}")


async def sql_values(pool: asyncpg.Pool, table: str, formula: str, count: int) -> list[Any]:
    """Each row's value, or EvaluationError where Postgres refuses that row."""
    scope = SqlScope({k: (quote_ident(k), t) for k, t in COLUMNS.items()})
    compiled = compile_formula(parse(formula), scope)
    query = f"SELECT ({compiled.sql}) AS v FROM public.{table} WHERE id = ${len(scope.params) + 1}"
    out: list[Any] = []
    async with pool.acquire() as conn:
        # Session-wide here (each query may fail alone); a step sets it for its transaction (GENERIC_PLANS).
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            try:
                # All rows at once; only when Postgres refuses one does each row go alone, to find which.
                every = await conn.fetch(f"SELECT ({compiled.sql}) AS v FROM public.{table} ORDER BY id", *scope.params)
                return [r["v"] for r in every]
            except asyncpg.PostgresError:
                pass
            for n in range(count):
                try:
                    out.append(await conn.fetchval(query, *scope.params, n))
                except asyncpg.PostgresError:
                    out.append(EvaluationError)
            return out
        finally:
            await conn.execute("RESET plan_cache_mode")


@pytest.mark.parametrize("formula", FORMULAS)
async def test_python_and_sql_agree(pool: asyncpg.Pool, table: Any, formula: str) -> None:
    name, data = table
    node = parse(formula)
    found = await sql_values(pool, name, formula, len(data))
    for row, from_sql in zip(data, found, strict=True):
        try:
            from_python: Any = evaluate(node, as_record(row))
        except EvaluationError:
            from_python = EvaluationError
        assert same(from_python, from_sql), f"{formula} on {as_record(row)}: python {from_python!r}, sql {from_sql!r}"


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("i + s", "+ on text needs string"),
        ("unknown_field * 2", "unknown field 'unknown_field'"),
        ("s < i", "cannot compare"),
        ("coalesce(s, i)", "mixes"),
        ("round(s)", "round()"),
        ("@month", "unknown parameter @month"),
    ],
)
def test_formulas_that_cannot_work_on_their_columns_are_refused_before_running(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=re.escape(message)):
        formula_type(parse(formula), COLUMNS)


def test_types_and_parameters() -> None:
    assert formula_type(parse("`Nb of items` * f"), COLUMNS) is ColumnType.FLOAT
    assert formula_type(parse("i / j"), COLUMNS) is ColumnType.FLOAT
    assert formula_type(parse("date_trunc('month', ts)"), COLUMNS) is ColumnType.DATETIME
    assert formula_type(parse("d >= @month"), COLUMNS, {"month": date(2024, 3, 1)}) is ColumnType.BOOLEAN
    scope = SqlScope({"d": ('"d"', ColumnType.DATE)}, values={"month": date(2024, 3, 1)})
    compiled = compile_formula(parse("d >= @month"), scope)
    assert scope.params == [date(2024, 3, 1)] and "$1::date" in compiled.sql
    assert evaluate(parse("i + @n"), {"i": 1}, {"n": 2}) == 3


NUMBERS = st.sampled_from(["i", "j", "f", "g", "`Nb of items`", "0", "1", "2.5", "-3", "length(s)", "abs(i)"])
TEXT = st.sampled_from(["s", "t", "'abc'", "''", "string(i)", "lower(t)", "trim(s)", "concat(s, i)", "string(d)"])


def _numeric(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return NUMBERS
    inner = _numeric(depth - 1)
    return st.one_of(
        NUMBERS,
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        st.tuples(st.sampled_from(["round", "abs", "floor", "ceil", "int", "float"]), inner).map(
            lambda p: f"{p[0]}({p[1]})"
        ),
        st.tuples(_boolean(depth - 1), inner, inner).map(lambda p: f"if({p[0]}, {p[1]}, {p[2]})"),
        st.tuples(inner, inner).map(lambda p: f"coalesce({p[0]}, {p[1]})"),
    )


def _boolean(depth: int) -> st.SearchStrategy[str]:
    base = st.one_of(
        st.sampled_from(["b", "true", "false", "null", "s is null", "d is not null"]),
        st.tuples(NUMBERS, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), NUMBERS).map(" ".join),
        st.tuples(TEXT, st.sampled_from(["=", "!=", "<", ">"]), TEXT).map(" ".join),
        NUMBERS.map(lambda n: f"{n} in (0, 1, 2, null)"),
    )
    if depth == 0:
        return base
    inner = _boolean(depth - 1)
    return st.one_of(
        base,
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        inner.map(lambda b: f"not ({b})"),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(formula=st.one_of(_numeric(2), _boolean(2), TEXT))
async def test_random_formulas_agree(pool: asyncpg.Pool, table: Any, formula: str) -> None:
    name, data = table
    node = parse(formula)
    try:
        formula_type(node, COLUMNS)
    except FormulaError:
        return  # refused before running: nothing to compare
    found = await sql_values(pool, name, formula, len(data))
    for row, from_sql in zip(data, found, strict=True):
        try:
            from_python: Any = evaluate(node, as_record(row))
        except EvaluationError:
            from_python = EvaluationError
        assert same(from_python, from_sql), f"{formula} on {as_record(row)}: python {from_python!r}, sql {from_sql!r}"
