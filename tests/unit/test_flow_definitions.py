"""Flow definitions without servers: field paths by step name, the DAG and its cycles, parameter values, SQL shape."""

from __future__ import annotations

from datetime import date

import pytest

from headrace.flows.compile import Source, StepError, compile_step
from headrace.flows.definitions import FlowError, load_text, parse_flow
from headrace.flows.graph import build_dag
from headrace.flows.params import declared_values
from headrace.models import Column
from headrace.models.types import ColumnType


def step(name: str, source: str, output: str, **extra: object) -> dict:
    return {"name": name, "input": source, "output": output, **extra}


def test_errors_name_the_step_and_the_field() -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow({"name": "f", "steps": [step("a", "s", "o", stages=[{"join": {"storage": "x"}}])]})
    assert caught.value.errors[0]["field"] == "steps.a.stages[0].join.on"


def test_dependencies_come_from_needs_and_from_storages_and_cycles_are_refused() -> None:
    flow = parse_flow({"name": "f", "steps": [step("b", "mid", "out"), step("a", "src", "mid"), step("c", "src", "x")]})
    dag = build_dag(flow)
    assert dag.needs["b"] == ("a",) and dag.order == ("a", "c", "b") and dag.downstream("a") == {"b"}
    looped = parse_flow({"name": "f", "steps": [step("a", "y", "x"), step("b", "x", "y")]})
    with pytest.raises(FlowError, match="cycle"):
        build_dag(looped)
    with pytest.raises(FlowError, match="reads the storage it writes"):
        build_dag(parse_flow({"name": "f", "steps": [step("a", "x", "x")]}))


def test_parameter_values() -> None:
    flow = parse_flow(
        load_text(
            b"name: f\nsteps:\n- name: a\n  input: s\n  output: o\n  params:\n"
            b"    month: {dates: {start: 2024-11-01, end: 2025-02-01, by: month}}\n",
            "application/yaml",
        )
    )
    assert flow.steps[0].param is not None
    values, kind = declared_values(flow.steps[0].param[1])
    assert values == [date(2024, 11, 1), date(2024, 12, 1), date(2025, 1, 1), date(2025, 2, 1)]
    assert kind is ColumnType.DATE


def test_a_step_is_one_statement_with_quoted_identifiers_and_literals_as_parameters() -> None:
    source = Source(
        "s", '"storage"."s"', [Column('odd "name"', "odd", ColumnType.STRING), Column("n", "n", ColumnType.INTEGER)]
    )
    flow = parse_flow(
        {"name": "f", "steps": [step("a", "s", "o", stages=[{"filter": "n > 41 and `odd \"name\"` = 'x'"}])]}
    )
    compiled = compile_step(flow.steps[0], {"s": source})
    sql = compiled.select_sql()
    assert sql.startswith("WITH ") and "41" not in sql and "'x'" not in sql and 41 in compiled.params
    assert '"odd \\"name\\""' not in sql and '"odd ""name"""' in sql
    with pytest.raises(StepError, match="unknown field 'ghost'"):
        compile_step(
            parse_flow({"name": "f", "steps": [step("a", "s", "o", stages=[{"select": ["ghost"]}])]}).steps[0],
            {"s": source},
        )
