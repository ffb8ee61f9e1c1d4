"""The push API over real HTTP: every accepted body shape lands in Kafka exactly once, every bad one gets its 4xx."""

from __future__ import annotations

import gzip
import uuid

import aiohttp
import asyncpg
import orjson

from tests.conftest import ADMIN
from tests.ingest.conftest import (
    SMALL_LIMIT,
    HostedIngest,
    PushTarget,
    event_id,
    make_target,
    read_topic,
    set_model_and_lock,
)

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
    async with (
        aiohttp.ClientSession(headers=ADMIN) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_the_seeds_curl_example_is_answered_once_kafka_holds_it(target: PushTarget, settings) -> None:
    status, answer, _ = await post(target.push_url, b'{"key":"msg1", "key2":"msg2"}', JSON)
    assert (status, answer) == (200, {"accepted": 1})
    [record] = await read_topic(settings.kafka_bootstrap, target.topic, 1)
    assert orjson.loads(record.value) == {"key": "msg1", "key2": "msg2"}
    headers = dict(record.headers)
    # No `_id` and no Idempotency-Key: the event is known by its Kafka position, which nothing can repeat.
    assert "hr-event-id" not in headers
    assert abs(int(headers["hr-received-at"]) - record.timestamp) < 1000


async def test_an_array_lands_exactly_once_with_the_events_own_ids(target: PushTarget, settings) -> None:
    events = [{"_id": f"e{i}", "n": i, "s": "x" * (i % 7)} for i in range(300)]
    status, answer, _ = await post(target.push_url, orjson.dumps(events), JSON)
    assert (status, answer) == (200, {"accepted": 300})
    records = await read_topic(settings.kafka_bootstrap, target.topic, 300)
    assert sorted(event_id(r) for r in records) == sorted(f"e{i}" for i in range(300))
    by_id = {event_id(r): orjson.loads(r.value) for r in records}
    assert by_id["e42"] == {"n": 42, "s": "x" * 0}  # `_id` is taken out of the record


async def test_ndjson_lands_exactly_once(target: PushTarget, settings) -> None:
    lines = [orjson.dumps({"_id": i, "v": i * 1.5}) for i in range(200)]
    body = b"\n".join(lines[:100]) + b"\n\n  \n" + b"\r\n".join(lines[100:]) + b"\n"
    status, answer, _ = await post(target.push_url, body, NDJSON)
    assert (status, answer) == (200, {"accepted": 200})
    records = await read_topic(settings.kafka_bootstrap, target.topic, 200)
    assert sorted(int(event_id(r)) for r in records) == list(range(200))


async def test_gzip_batches_land_exactly_once(target: PushTarget, settings) -> None:
    array = gzip.compress(orjson.dumps([{"_id": f"a{i}", "i": i} for i in range(150)]))
    status, answer, _ = await post(target.push_url, array, JSON | {"Content-Encoding": "gzip"})
    assert (status, answer) == (200, {"accepted": 150})
    # Two gzip members one after the other are one stream, as gunzip reads them.
    ndjson = gzip.compress(b'{"_id": "n0"}\n') + gzip.compress(b'{"_id": "n1"}\n{"_id": "n2"}\n')
    status, answer, _ = await post(target.push_url, ndjson, NDJSON | {"Content-Encoding": "gzip"})
    assert (status, answer) == (200, {"accepted": 3})
    records = await read_topic(settings.kafka_bootstrap, target.topic, 153)
    assert sorted(event_id(r) for r in records) == sorted([f"a{i}" for i in range(150)] + ["n0", "n1", "n2"])


async def test_the_idempotency_key_is_the_event_id(target: PushTarget, settings) -> None:
    status, _, _ = await post(target.push_url, b'{"a": 1}', JSON | {"Idempotency-Key": "order-17"})
    assert status == 200
    status, _, _ = await post(target.push_url, b'[{"a": 1}, {"a": 2}]', JSON | {"Idempotency-Key": "batch-9"})
    assert status == 200
    records = await read_topic(settings.kafka_bootstrap, target.topic, 3)
    assert sorted(event_id(r) for r in records) == ["batch-9:0", "batch-9:1", "order-17"]


async def test_events_are_keyed_by_the_primary_key(ingest: HostedIngest, storage_name: str, settings) -> None:
    target = make_target(ingest, storage_name, primary_key=["user", "day"])
    events = [{"user": f"u{i % 5}", "day": "2024-01-01", "seq": i} for i in range(100)]
    assert (await post(target.push_url, orjson.dumps(events), JSON))[0] == 200
    records = await read_topic(settings.kafka_bootstrap, target.topic, 100)
    partitions: dict[bytes, set[int]] = {}
    sequences: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions.setdefault(record.key, set()).add(record.partition)
        sequences.setdefault(record.key, []).append(orjson.loads(record.value)["seq"])
    assert set(partitions) == {orjson.dumps([f"u{u}", "2024-01-01"]) for u in range(5)}
    assert all(len(p) == 1 for p in partitions.values())
    assert all(seq == sorted(seq) for seq in sequences.values())  # one key's events keep their order


async def test_malformed_json_is_refused_with_its_position(target: PushTarget) -> None:
    status, answer, _ = await post(target.push_url, b'{"a": 1,, "b": 2}', JSON)
    assert status == 400
    assert answer["position"] == 8 and "malformed JSON" in answer["error"]
    status, answer, _ = await post(target.push_url, b'{"a": 1}\n{"b": 2}\n{"c": }\n', NDJSON)
    assert status == 400
    assert answer["line"] == 3 and answer["position"] == 24
    status, answer, _ = await post(target.push_url, b"", JSON)
    assert status == 400 and answer["position"] == 0


async def test_an_element_that_is_not_an_object_is_named_by_its_index(target: PushTarget, settings) -> None:
    status, answer, _ = await post(target.push_url, b'[{"a": 1}, {"a": 2}, [3], {"a": 4}]', JSON)
    assert (status, answer["index"]) == (400, 2)
    assert "element 2" in answer["error"]
    status, answer, _ = await post(target.push_url, b'{"a": 1}\n"text"\n', NDJSON)
    assert (status, answer["index"]) == (400, 1)
    status, answer, _ = await post(target.push_url, b"42", JSON)
    assert status == 400
    # Nothing of a refused batch was produced.
    assert await read_topic(settings.kafka_bootstrap, target.topic, 0, timeout=1) == []


async def test_wide_integers_are_refused_not_rounded(target: PushTarget) -> None:
    status, answer, _ = await post(target.push_url, b'{"big": 123456789012345678901234567890}', JSON)
    assert status == 400 and "64-bit" in answer["error"]
    status, _, _ = await post(target.push_url, b'{"fits": 9223372036854775807, "id": "12345678901234567890"}', JSON)
    assert status == 200


async def test_text_holding_nul_is_refused_because_postgres_cannot_store_it(target: PushTarget) -> None:
    status, answer, _ = await post(target.push_url, b'[{"a": "ok"}, {"b": "x\\u0000y"}]', JSON)
    assert status == 400 and answer["index"] == 1 and "NUL" in answer["error"]
    status, _, _ = await post(target.push_url, b'{"\\u0000": 1}', JSON)
    assert status == 400
    # An escaped backslash followed by "u0000" is ordinary text.
    status, _, _ = await post(target.push_url, b'{"a": "\\\\u0000"}', JSON)
    assert status == 200


async def test_an_unknown_storage_and_a_wrong_token_look_the_same(target: PushTarget) -> None:
    base, token = target.push_url.rsplit("/", 1)
    wrong_token = await post(f"{base}/{'0' * len(token)}", b"{}", JSON)
    unknown = await post(target.push_url.replace(target.id, str(uuid.uuid4())), b"{}", JSON)
    not_an_id = await post(target.push_url.replace(target.id, "nope"), b"{}", JSON)
    assert wrong_token[0] == unknown[0] == not_an_id[0] == 404
    assert wrong_token[1] == unknown[1] == not_an_id[1]


async def test_a_wrong_content_type_or_encoding_is_415(target: PushTarget) -> None:
    assert (await post(target.push_url, b'{"a": 1}', {"Content-Type": "text/plain"}))[0] == 415
    assert (await post(target.push_url, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}))[0] == 415
    assert (await post(target.push_url, b'{"a": 1}', JSON | {"Content-Encoding": "br"}))[0] == 415
    assert (await post(target.push_url, b'{"a": 1}', {"Content-Type": "application/json; charset=latin-1"}))[0] == 415
    assert (await post(target.push_url, b'{"a": 1}', {"Content-Type": "application/json; charset=utf-8"}))[0] == 200


async def test_a_corrupt_gzip_body_is_400(target: PushTarget) -> None:
    truncated = gzip.compress(b'{"a": 1}')[:-6]
    assert (await post(target.push_url, truncated, JSON | {"Content-Encoding": "gzip"}))[0] == 400
    assert (await post(target.push_url, b'{"a": 1}', JSON | {"Content-Encoding": "gzip"}))[0] == 400


async def test_bodies_over_the_limit_are_413_as_sent_and_after_gunzip(
    small_ingest: HostedIngest, storage_name: str
) -> None:
    target = make_target(small_ingest, storage_name)
    over = orjson.dumps([{"pad": "x" * 1000}] * (SMALL_LIMIT // 1000 + 1))
    status, answer, _ = await post(target.push_url, over, JSON)
    assert (status, answer["limit"]) == (413, SMALL_LIMIT)
    # A gzip bomb: 64 MiB of zeros inflating from about 64 KiB, refused once the output passes the limit.
    bomb = gzip.compress(b'{"a": "' + b"0" * (64 * 1024 * 1024) + b'"}', compresslevel=9)
    assert len(bomb) < SMALL_LIMIT
    status, answer, _ = await post(target.push_url, bomb, JSON | {"Content-Encoding": "gzip"})
    assert status == 413 and "after gunzip" in answer["error"]
    assert small_ingest.service.budget.used == 0


async def test_a_value_that_does_not_fit_a_locked_model_is_422(
    ingest: HostedIngest, pool: asyncpg.Pool, storage_name: str, settings
) -> None:
    target = make_target(ingest, storage_name)
    await set_model_and_lock(pool, storage_name, {"n": 1, "d": "2024-01-05"})
    status, answer, _ = await post(target.push_url, b'[{"n": 2}, {"n": "abc"}, {"d": true}]', JSON)
    assert status == 422
    assert [(m["index"], m["field"]) for m in answer["misfits"]] == [(1, "n"), (2, "d")]
    assert "'n'" in answer["error"] and "integer" in answer["error"]
    # A new field still fits a locked model; nothing of the refused push was produced.
    assert (await post(target.push_url, b'{"n": 3, "y": 5}', JSON))[0] == 200
    [record] = await read_topic(settings.kafka_bootstrap, target.topic, 1)
    assert orjson.loads(record.value) == {"n": 3, "y": 5}


async def test_metrics_count_events_bytes_and_latency(ingest: HostedIngest, target: PushTarget) -> None:
    await post(target.push_url, b'[{"a": 1}, {"a": 2}]', JSON)
    await post(target.push_url, b"[1]", JSON)
    async with aiohttp.ClientSession(headers=ADMIN) as session, session.get(f"{ingest.url}/metrics") as response:
        text = await response.text()
    for name in (
        f'headrace_ingest_events_accepted_total{{storage="{target.name}"}} 2.0',
        'headrace_ingest_events_rejected_total{reason="not_an_object"}',
        "headrace_ingest_received_bytes_total",
        "headrace_ingest_push_duration_seconds_bucket",
        "headrace_ingest_kafka_produce_duration_seconds_bucket",
        "headrace_ingest_pushes_in_flight",
        "headrace_ingest_in_flight_bytes",
        'headrace_http_requests_total{route="/api/data_source/{storage_id}/push/{token}",service="ingest",status="200"}',
    ):
        assert name in text, name


async def test_the_openapi_document_is_served(ingest: HostedIngest) -> None:
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.get(f"{ingest.url}/openapi.json") as response:
            document = await response.json()
        async with session.get(f"{ingest.url}/openapi.yaml") as response:
            assert response.status == 200
    assert "/api/data_source/{storage_id}/push/{token}" in document["paths"]


SEPARATED = [
    {"_id": "s1", "text": "line\u2028separator"},
    {"_id": "s2", "text": "paragraph\u2029separator", "nel": "next\x85line"},
    {"_id": "s3", "text": "\u2028\u2029\x85", "more": ["a\u2028", {"b\u2029": "\x85"}]},
]


async def test_separators_inside_strings_survive_ndjson_pushes_and_batches(
    ingest: HostedIngest, target: PushTarget, settings
) -> None:
    """NDJSON is split on LF alone: U+2028, U+2029 and U+0085 are text, written raw (JSON lets them be)."""
    body = b"\n".join(orjson.dumps(r) for r in SEPARATED) + b"\n"
    assert "\u2028".encode() in body and "\x85".encode() in body
    assert (await post(target.push_url, body, NDJSON))[:2] == (200, {"accepted": 3})
    batch = f"{ingest.url}/api/storages/{target.name}/batches?mode=append&batch_id=sep"
    status, answer, _ = await post(batch, body.replace(b'"_id":"s', b'"id":"b'), NDJSON)
    assert (status, answer["rows"]) == (200, 3), answer
    records = await read_topic(settings.kafka_bootstrap, target.topic, 7)
    values = {event_id(r): orjson.loads(r.value) for r in records}
    for record in SEPARATED:
        number = record["_id"][1]
        assert values[record["_id"]] == {k: v for k, v in record.items() if k != "_id"}
        assert values[f"sep:{int(number) - 1}"] == {"id": f"b{number}"} | {
            k: v for k, v in record.items() if k != "_id"
        }


async def test_an_event_larger_than_kafka_takes_is_413_not_a_retry(target: PushTarget) -> None:
    body = orjson.dumps([{"small": 1}, {"big": "x" * 1_000_001}])
    status, answer, _ = await post(target.push_url, body, JSON)
    assert (status, answer["index"], answer["limit"]) == (413, 1, 1_000_000), answer
