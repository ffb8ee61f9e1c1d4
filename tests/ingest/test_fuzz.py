"""Fuzzing the push API with hypothesis: whatever the body, the answer is 2xx or 4xx, never 5xx, and ingest lives on."""

from __future__ import annotations

import gzip
import http.client
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.ingest.conftest import HostedIngest, PushTarget, make_target

CONTENT_TYPES = ["application/json", "application/x-ndjson", "application/json; charset=utf-8", "text/plain", ""]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: far past 64 bits too
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
records = st.dictionaries(st.text(max_size=20), json_values, max_size=8)  # unicode and empty keys included


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer past 64 bits: the stdlib writes every digit
        import json

        return json.dumps(value).encode()


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=2000),
    records.map(_dumps),
    st.lists(records, max_size=10).map(_dumps),
    st.lists(records, max_size=10).map(lambda rs: b"\n".join(_dumps(r) for r in rs)),
    st.integers(min_value=1, max_value=5000).map(nested),
    st.integers(min_value=1, max_value=5000).map(lambda d: b"[" * d + b"]" * d),
    st.sampled_from([b'{"n": 1e999}', b'{"n": -1e400}', b'{"n": 18446744073709551616}', b'{"n": NaN}']),
)


@pytest.fixture
def fuzz_target(ingest: HostedIngest, storage_name: str) -> PushTarget:
    return make_target(ingest, storage_name)


def push(target: PushTarget, body: bytes, content_type: str, gzipped: bool) -> int:
    url = urlsplit(target.push_url)
    headers = {"Content-Type": content_type} if content_type else {}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES), gzipped=st.booleans())
@example(body=orjson.dumps({f"k{i}": i for i in range(10_000)}), content_type="application/json", gzipped=False)
@example(body=orjson.dumps({"": 1, "é𝄞\u0000": "\u202e", " ": None}), content_type="application/json", gzipped=True)
@example(body=nested(100_000), content_type="application/json", gzipped=False)
def test_any_body_gets_2xx_or_4xx_and_never_5xx(
    fuzz_target: PushTarget, body: bytes, content_type: str, gzipped: bool
) -> None:
    status = push(fuzz_target, body, content_type, gzipped)
    assert 200 <= status < 500, status


def test_ingest_still_answers_after_the_fuzzing(ingest: HostedIngest, fuzz_target: PushTarget) -> None:
    assert push(fuzz_target, b'{"still": "alive"}', "application/json", False) == 200
