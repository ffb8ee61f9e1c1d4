"""The ETL formula language (parser, allowlist, evaluation) and a storage's ETL applied by a running worker."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from headrace.etl import FUNCTIONS, EtlConfig, EvaluationError, FormulaError, evaluate, parse
from headrace.etl.expressions import fields_of, tokenize
from tests.conftest import RunningPlatform
from tests.eventually import eventually
from tests.transform.conftest import TransformLab, json_values


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-a + 10 % 4", 0),
        ("7 / 2", 3.5),
        ("price * qty", 7.5),
        ("a = 2 and not b", True),
        ("a != 2 or b", False),
        ("name in ('x', 'Ann')", True),
        ("name not in ['Ann']", False),
        ("missing is null", True),
        ("name is not null", True),
        ("missing + 1", None),
        ("missing = 1", None),
        ("upper(name) == 'ANN'", True),
        ("concat(name, '-', a, missing)", "Ann-2"),
        ("coalesce(missing, name)", "Ann"),
        ("length(name) + abs(-2)", 5),
        ("round(price, 1)", 2.5),
        ("substr('headrace', 2, 4)", "eadr"),
        ("date_trunc('month', at)", "2021-04-01T00:00:00Z"),
        ("date(at)", "2021-04-08"),
        ("if(a > 1, 'big', 'small')", "big"),
        ("`odd field` * 2", 6),
        ("'it''s' = \"it's\"", True),
        ("int('42') + float('0.5')", 42.5),
    ],
)
def test_formulas_evaluate(formula: str, expected: object) -> None:
    record = {"a": 2, "b": False, "name": "Ann", "price": 2.5, "qty": 3, "at": "2021-04-08T10:58:14Z", "odd field": 3}
    assert evaluate(parse(formula), record) == expected


@pytest.mark.parametrize(
    "formula",
    [
        "__import__('os').system('true')",
        "eval('1')",
        "open('x')",
        "1 +",
        "a ; b",
        "lower()",
        "lower(a, b)",
        "a ** 2",
        "",
        "lambda: 1",
    ],
)
def test_anything_outside_the_language_or_the_allowlist_is_refused(formula: str) -> None:
    with pytest.raises(FormulaError):
        parse(formula)


def test_dotted_names_are_field_names_never_attribute_access() -> None:
    assert parse("a.__class__") == parse("`a.__class__`")
    assert evaluate(parse("a.__class__"), {"a": 1}) is None


def test_evaluation_failures_name_the_problem() -> None:
    with pytest.raises(EvaluationError, match="division by zero"):
        evaluate(parse("a / 0"), {"a": 1})
    with pytest.raises(EvaluationError, match="needs a number"):
        evaluate(parse("a - 1"), {"a": "text"})


def test_the_allowlist_and_tokens() -> None:
    assert {"lower", "upper", "concat", "coalesce", "length", "round", "abs", "substr", "date_trunc", "now"} <= set(
        FUNCTIONS
    )
    assert [t.kind for t in tokenize("a >= 'x'")] == ["name", "op", "string", "end"]
    assert fields_of(parse("concat(a, b) = c and d is null")) == {"a", "b", "c", "d"}


def test_etl_config_applies_compute_filter_select_rename_in_order() -> None:
    config = EtlConfig(
        select=["user", "total"],
        rename={"user": "customer"},
        filter="total > 10",
        compute={"total": "price * qty"},
    )
    assert config.apply({"user": "u1", "price": 4, "qty": 3, "noise": 1}) == {"customer": "u1", "total": 12}
    assert EtlConfig.from_json(config.to_json()) == config
    with pytest.raises(FormulaError, match="computed column 'bad'"):
        EtlConfig(compute={"bad": "nope("})


async def test_worker_applies_the_storage_etl_and_rejects_failing_records(
    lab: TransformLab, platform: RunningPlatform, storage_name: str
) -> None:
    storage = await lab.storage(storage_name)
    # The ETL is set through the ingest service's API (the same Postgres catalog the lab's workers read).
    done = await asyncio.to_thread(
        platform.cli, "storage", "etl", storage_name, "--select", "user,total,ratio", "--rename", "user=customer",
        "--filter", "kind != 'test'", "--compute", "total=price * qty", "--compute", "ratio=price / qty", "--json",
    )  # fmt: skip
    assert orjson.loads(done.stdout)["compute"] == {"total": "price * qty", "ratio": "price / qty"}
    refused = await asyncio.to_thread(
        platform.cli, "storage", "etl", storage_name, "--filter", "exec('x')", check=False
    )  # fmt: skip
    assert refused.returncode == 1 and "unknown function 'exec'" in refused.stderr
    records = [
        {"user": "a", "price": 2, "qty": 3, "kind": "sale"},
        {"user": "b", "price": 5, "qty": 1, "kind": "test"},  # filtered out: not an error
        {"user": "c", "price": 1, "qty": 0, "kind": "sale"},  # price / 0: rejected with the reason
    ]
    await lab.produce(storage_name, json_values(records), partition=0)
    await eventually(lambda: lab.positions_done(storage_name, 3), what="ETL batch written")
    rows = await lab.rows(storage)
    assert [(r["customer"], r["total"], r["ratio"]) for r in rows] == [("a", 6, 2 / 3)]
    assert "kind" not in rows[0] and "user" not in rows[0]
    rejected = await lab.pool.fetch(
        "SELECT reason, payload FROM headrace.rejected_rows WHERE storage_id = $1", storage.id
    )
    assert [r["reason"] for r in rejected] == ["ETL: computed column 'ratio': division by zero in /"]
    assert rejected[0]["payload"]["user"] == "c"
