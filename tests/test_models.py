"""The model's rules without servers: type inference, the widening lattice, column naming, planning."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.models import ColumnNamer, ColumnType, Model, infer_text, infer_value, widen
from headrace.models.identifiers import MAX_IDENTIFIER_BYTES

T = ColumnType


def test_json_values_infer_their_types() -> None:
    assert infer_value(1) is T.INTEGER
    assert infer_value(1.5) is T.FLOAT
    assert infer_value(True) is T.BOOLEAN
    assert infer_value({"a": 1}) is T.JSON and infer_value([1]) is T.JSON
    assert infer_value("2024-01-05") is T.DATE
    assert infer_value("2024-01-05T10:00:00Z") is T.DATETIME
    assert infer_value("2024-01-05 10:00:00.123+02:00") is T.DATETIME
    assert infer_value("05/01/2024") is T.STRING
    assert infer_value("2024-13-45") is T.STRING
    assert infer_value(None) is None
    assert infer_value(2**70) is T.STRING  # no bigint holds it; its digits are kept as text


def test_csv_cells_infer_like_pushed_values() -> None:
    assert infer_text("42") is T.INTEGER
    assert infer_text("-4.2e3") is T.FLOAT
    assert infer_text("TRUE") is T.BOOLEAN
    assert infer_text("2024-01-05") is T.DATE
    assert infer_text("") is None
    assert infer_text("abc") is T.STRING


def test_lattice() -> None:
    assert widen(T.INTEGER, T.FLOAT) is T.FLOAT
    assert widen(T.DATE, T.DATETIME) is T.DATETIME
    assert widen(T.DATE, T.STRING) is T.STRING
    assert widen(T.BOOLEAN, T.INTEGER) is T.STRING
    assert widen(T.JSON, T.INTEGER) is T.STRING
    assert widen(T.INTEGER, None) is T.INTEGER and widen(None, T.DATE) is T.DATE
    for a, b, c in itertools.product(list(T), repeat=3):
        assert widen(a, b) == widen(b, a)
        assert widen(widen(a, b), c) == widen(a, widen(b, c))


def test_column_names_are_safe_and_unique() -> None:
    namer = ColumnNamer()
    assert namer.name_for('"; DROP TABLE x; --') == '"; DROP TABLE x; --'
    assert namer.name_for("_id") == "x_id"
    assert namer.name_for("") == "column"
    assert namer.name_for("a\x00b") == "a_b"
    long_a, long_b = "é" * 40 + "a", "é" * 40 + "b"
    first, second = namer.name_for(long_a), namer.name_for(long_b)
    assert first != second
    assert len(first.encode()) <= MAX_IDENTIFIER_BYTES and len(second.encode()) <= MAX_IDENTIFIER_BYTES


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["2024-01-05", "2024-01-05T10:00:00Z", "text", "", "1"]),
    st.just({"nested": True}),
)
records = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_scalars, max_size=4), max_size=12)


def _types_after(batches: list[list[dict]]) -> dict[str, ColumnType]:
    model = Model()
    for batch in batches:
        change, _ = model.plan(batch)
        model = model.apply(change)
    return {c.key: c.type for c in model.columns}


@settings(max_examples=200, deadline=None)
@given(records, st.randoms())
def test_the_same_rows_in_any_order_give_the_same_model(rows: list[dict], rng) -> None:
    shuffled = rows[:]
    rng.shuffle(shuffled)
    one_by_one = _types_after([[r] for r in rows])
    assert one_by_one == _types_after([[r] for r in shuffled])
    assert one_by_one == _types_after([rows])


def test_past_the_column_limit_new_fields_get_no_column() -> None:
    model = Model(max_columns=2)
    change, _ = model.plan([{"a": 1, "b": 2, "c": 3}])
    assert [c.key for c in change.added] == ["a", "b"]  # the writer keeps "c" in the _overflow column
    model = model.apply(change)
    change, _ = model.plan([{"d": 1, "a": 2.5}])
    assert change.added == [] and [after.type for _, after in change.widened] == [T.FLOAT]


def test_a_locked_model_reports_misfits_and_still_adds_columns() -> None:
    model = Model().apply(Model().plan([{"n": 1}])[0])
    change, misfits = model.plan([{"n": "abc"}, {"n": 2, "y": 5}], locked=True)
    assert list(misfits) == [0] and "'n'" in misfits[0].reason
    assert [c.key for c in change.added] == ["y"] and change.widened == []
