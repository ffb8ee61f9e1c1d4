"""Queries are bounded: never more than MAX_QUERY_ROWS rows, and a query past it fails instead of being cut."""

from __future__ import annotations

import uuid

import pytest

from headrace.catalog import Storage
from headrace.models import Model
from headrace.query import MAX_QUERY_ROWS, QueryError, build_query

STORAGE = Storage(uuid.uuid4(), "s", "s", (), "append", False, 1)
MODEL = Model.from_json([{"key": "n", "name": "n", "type": "integer"}], 1, 1000)


def test_a_query_without_a_limit_asks_for_one_row_past_the_bound() -> None:
    built = build_query(STORAGE, MODEL, {"columns": ["n"]})
    assert built.sql.endswith("LIMIT $1") and built.args == [MAX_QUERY_ROWS + 1]


def test_a_limit_past_the_bound_is_refused() -> None:
    with pytest.raises(QueryError, match="at most"):
        build_query(STORAGE, MODEL, {"limit": MAX_QUERY_ROWS + 1})
    built = build_query(STORAGE, MODEL, {"limit": 10, "offset": 20})
    assert built.sql.endswith("LIMIT $1 OFFSET $2") and built.args == [10, 20]
