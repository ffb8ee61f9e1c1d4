"""The byte-level counts that decide limits before parsing agree with what parsing the body would make."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.counting import count, estimate

# Text full of what the counts must see through: structure, quotes, escapes, separators, newlines.
texts = st.text(alphabet=st.sampled_from(list('ab,:{}[]"\\\n\u2028 ')), max_size=10)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), texts),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
records = st.lists(st.dictionaries(texts, values, max_size=5), max_size=8)
padding = st.sampled_from([b"", b" ", b"\n", b"\r\n", b" \t "])


def python_objects(value: Any) -> int:
    """The objects orjson makes for a value: containers, keys and scalars."""
    if isinstance(value, dict):
        return 1 + sum(1 + python_objects(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(python_objects(item) for item in value)
    return 1


@settings(max_examples=200, deadline=None)
@given(records=records, pad=padding, chunk=st.sampled_from([1, 2, 3, 5, 64, 256 * 1024]))
def test_counts_match_the_parse_in_any_chunking(records: list[dict], pad: bytes, chunk: int) -> None:
    """Chunks of a few bytes put their edges inside strings, escapes and lines."""
    array = pad + orjson.dumps(records) + pad
    ndjson = b"".join(pad + orjson.dumps(r) + b"\n" + pad for r in records)
    objects = sum(python_objects(r) for r in records)
    for body, kind, events in ((array, "json", max(1, len(records))), (ndjson, "ndjson", len(records))):
        exact = count(body, kind, stop_after=10**9, chunk=chunk)
        assert exact.events == events, body
        assert exact.values >= objects, body
        bound = estimate(body, kind)
        assert bound.events >= exact.events and bound.values >= exact.values, body


def test_one_object_is_one_event_whatever_its_commas() -> None:
    body = orjson.dumps({"a": [1, 2, 3], "b": "x,y,z"})
    assert count(body, "json", 10).events == estimate(body, "json").events == 1


def test_the_count_stops_once_past_the_cap() -> None:
    body = b"[" + b",".join([b"{}"] * 3_000_000) + b"]"
    shape = count(body, "json", stop_after=50_000)
    assert 50_000 < shape.events < 3_000_000  # stopped after a chunk or so, never went through 9 MB
    assert count(b"{}\n" * 1000, "ndjson", stop_after=10).events > 10
