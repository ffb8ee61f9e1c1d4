"""The formula language is bounded: length, nesting, round() digits, integer range, text built; and fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.etl import EvaluationError, FormulaError, evaluate, parse
from headrace.etl.expressions import MAX_DEPTH, MAX_FORMULA_LENGTH, MAX_TEXT_LENGTH


@pytest.mark.parametrize(
    "formula",
    [
        "not " * 900 + "true",  # used to overflow the evaluator's stack
        "(" * 200 + "1" + ")" * 200,
        "-" * 500 + "1",
        "x" + " + x" * (MAX_FORMULA_LENGTH // 4),
        "99999999999999999999",
    ],
)
def test_formulas_past_the_bounds_are_refused_when_parsed(formula: str) -> None:
    with pytest.raises(FormulaError):
        parse(formula)


def test_nesting_up_to_the_bound_parses_and_evaluates() -> None:
    formula = "not " * (MAX_DEPTH - 2) + "true"
    assert evaluate(parse(formula), {}) is True  # an even number of nots


@pytest.mark.parametrize(
    ("formula", "record"),
    [
        ("round(x, -10000000)", {"x": 5}),  # used to run for seconds
        ("replace(s, '', 'xxxxxxxxxx')", {"s": "a" * 200_000}),
        ("concat(s, s, s, s, s, s)", {"s": "a" * (MAX_TEXT_LENGTH // 4)}),
        ("x * x * x", {"x": 2**40}),
    ],
)
def test_evaluations_past_the_bounds_fail_on_the_record(formula: str, record: dict) -> None:
    with pytest.raises(EvaluationError):
        evaluate(parse(formula), record)


ALPHABET = st.sampled_from(
    [*"abxyz019.,'\"`()[]+-*/%<>=! \\_\n", "and", "or", "not", "in", "is", "null", "round", "replace", "concat"]
)


@settings(max_examples=600, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(st.text(max_size=300), st.lists(ALPHABET, max_size=120).map(" ".join)),
    record=st.dictionaries(
        st.sampled_from(["a", "b", "x", "y", "z"]),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=50)),
    ),
)
def test_any_text_is_parsed_or_refused_and_any_formula_evaluates_or_fails_cleanly(text: str, record: dict) -> None:
    """No other exception, and (hypothesis' deadline) no input takes more than a second."""
    try:
        node = parse(text)
    except FormulaError:
        return
    try:
        evaluate(node, record)
    except EvaluationError:
        pass
