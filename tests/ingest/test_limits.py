"""Ingest's memory stays bounded: events capped, budget by events and values, read deadline, /batches, /records."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import psutil
import pytest

from headrace.catalog import Catalog
from headrace.catalog.provision import create_storage
from headrace.platform.processes import wait_ready
from headrace.settings import Settings
from tests.conftest import ADMIN, clean_environ
from tests.eventually import eventually
from tests.ingest.conftest import (
    SMALL_BUDGET,
    SMALL_LIMIT,
    SMALL_MAX_EVENTS,
    HostedIngest,
    event_id,
    ingest_settings,
    make_target,
    read_topic,
    set_model_and_lock,
)
from tests.ingest.test_push import JSON, NDJSON, post

MiB = 1024 * 1024
BATCH_LIMIT = MiB


class SlowPush:
    """A request whose body stops partway: raw HTTP, so the test decides when (and whether) the rest comes."""

    def __init__(self, url: str, content_type: str, length: int) -> None:
        self.url = urlsplit(url)
        self.content_type = content_type
        self.length = length

    async def send_part(self, part: bytes) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.url.hostname, self.url.port)
        head = (
            f"POST {self.url.path}{'?' + self.url.query if self.url.query else ''} HTTP/1.1\r\n"
            f"Host: {self.url.netloc}\r\nContent-Type: {self.content_type}\r\nContent-Length: {self.length}\r\n"
            f"Authorization: {ADMIN['Authorization']}\r\n\r\n"
        )
        self.writer.write(head.encode() + part)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict]:
        status_line = await self.reader.readline()
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        return int(status_line.split()[1]), orjson.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


@pytest.fixture(scope="module")
def batch_ingest(settings: Settings) -> Iterator[HostedIngest]:
    """An ingest service taking batches of 1 MiB and pushes (so records) of 64 KiB, with the default budget."""
    hosted = HostedIngest(
        ingest_settings(settings, ingest_max_batch_bytes=BATCH_LIMIT, ingest_max_body_bytes=SMALL_LIMIT)
    ).start()
    yield hosted
    hosted.stop()


@pytest.fixture(scope="module")
def deadline_ingest(settings: Settings) -> Iterator[HostedIngest]:
    """An ingest service that waits one second for a body."""
    hosted = HostedIngest(ingest_settings(settings, ingest_read_timeout_seconds=1.0)).start()
    yield hosted
    hosted.stop()


# -- events per push ------------------------------------------------------------------------------------------------


async def test_arrays_and_ndjson_past_the_cap_are_413_naming_it(small_ingest: HostedIngest, storage_name: str) -> None:
    target = make_target(small_ingest, storage_name)
    over = [{"i": i} for i in range(SMALL_MAX_EVENTS + 1)]
    for body, headers in (
        (orjson.dumps(over), JSON),
        (b"\n".join(orjson.dumps(r) for r in over), NDJSON),
        (gzip.compress(orjson.dumps(over)), JSON | {"Content-Encoding": "gzip"}),
    ):
        status, answer, _ = await post(target.push_url, body, headers)
        assert (status, answer["max_events"]) == (413, SMALL_MAX_EVENTS), answer
        assert str(SMALL_MAX_EVENTS) in answer["error"] and "HEADRACE_INGEST_MAX_EVENTS" in answer["error"]
    # At the cap is fine, whatever the commas in strings and the blank lines say.
    at_cap = [{"i": i, "text": ",,,,"} for i in range(SMALL_MAX_EVENTS)]
    assert (await post(target.push_url, orjson.dumps(at_cap), JSON))[:2] == (200, {"accepted": SMALL_MAX_EVENTS})
    lines = b"\n\n \r\n".join(orjson.dumps({"i": i}) for i in range(SMALL_MAX_EVENTS))
    assert (await post(target.push_url, lines, NDJSON))[:2] == (200, {"accepted": SMALL_MAX_EVENTS})
    assert small_ingest.service.budget.used == 0


async def test_a_body_whose_values_could_never_fit_the_budget_is_413(
    small_ingest: HostedIngest, storage_name: str
) -> None:
    target = make_target(small_ingest, storage_name)
    # One event, under the body limit, holding 20,000 values: about 1 MiB as Python objects.
    body = orjson.dumps({"values": [0] * 20_000})
    assert len(body) < SMALL_LIMIT
    status, answer, _ = await post(target.push_url, body, JSON)
    assert (status, answer["limit"]) == (413, SMALL_BUDGET), answer
    assert "HEADRACE_INGEST_IN_FLIGHT_BYTES" in answer["error"]
    assert small_ingest.service.budget.used == 0


# -- the budget while others hold it, and the read deadline -----------------------------------------------------------


async def test_overload_is_429_with_retry_after_and_the_budget_comes_back(
    small_ingest: HostedIngest, storage_name: str
) -> None:
    target = make_target(small_ingest, storage_name)
    budget = small_ingest.service.budget
    # A body stalled just short of its end holds its bytes (twice: as read and as joined) ...
    slow = SlowPush(target.push_url, "application/json", SMALL_LIMIT)
    await slow.send_part(b"[" + b" " * (SMALL_LIMIT - 1024))
    await eventually(lambda: budget.used >= 2 * (SMALL_LIMIT - 1024))
    # ... so a push that fits the budget alone finds too little of it left.
    body = orjson.dumps([{"pad": "x" * 1000}] * 40)
    status, answer, headers = await post(target.push_url, body, JSON)
    assert status == 429 and int(headers["Retry-After"]) >= 1, answer
    slow.close()
    await eventually(lambda: budget.used == 0)
    assert (await post(target.push_url, body, JSON))[:2] == (200, {"accepted": 40})


async def test_a_slow_body_past_the_deadline_is_408_and_gives_its_reservation_back(
    deadline_ingest: HostedIngest, storage_name: str
) -> None:
    target = make_target(deadline_ingest, storage_name)
    budget = deadline_ingest.service.budget
    slow = SlowPush(target.push_url, "application/json", 10_000)
    await slow.send_part(b'[{"a": 1},')
    await eventually(lambda: budget.used > 0)
    status, answer = await slow.response()
    slow.close()
    assert status == 408 and answer["timeout_seconds"] == 1.0, answer
    assert budget.used == 0
    assert (await post(target.push_url, b'{"next": 1}', JSON))[:2] == (200, {"accepted": 1})
    # A batch body must keep coming too: each read waits at most the deadline.
    slow = SlowPush(f"{deadline_ingest.url}/api/storages/{storage_name}/batches", "application/x-ndjson", 10_000)
    await slow.send_part(b'{"a": 1}\n')
    status, answer = await slow.response()
    slow.close()
    assert status == 408, answer
    assert budget.used == 0


# -- the gzip bomb of the issue, against a real ingest process ----------------------------------------------------


@pytest.fixture
def ingest_process(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Settings]]:
    """`python -m ingest` with the default limits, in a process of its own, so its memory can be watched."""
    own = ingest_settings(settings)
    env = clean_environ() | {
        "HEADRACE_KAFKA_BOOTSTRAP": str(own.kafka_bootstrap),
        "HEADRACE_DATABASE_URL": str(own.database_url),
        "HEADRACE_INGEST_PORT": str(own.ingest_port),
        "HEADRACE_DATA_DIR": str(tmp_path),
        "HEADRACE_COLLECTOR_SCHEDULER": "false",
        "HEADRACE_LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ingest"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, own
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def peak_rss(pid: int) -> int:
    """The process's peak RSS since the last reset_peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: the peak RSS starts again from the current RSS


async def test_three_million_empty_objects_in_9_kb_of_gzip_are_refused_in_little_memory(
    ingest_process: tuple[subprocess.Popen, Settings], pool: asyncpg.Pool, storage_name: str
) -> None:
    process, own = ingest_process
    url = own.service_url("ingest")
    await wait_ready(url, process)
    target = (await create_storage(own, Catalog(pool), storage_name))["push_url"]
    warm = orjson.dumps([{"warm": i} for i in range(1000)])
    assert (await post(target, warm, JSON))[0] == 200  # the producer, the topic and the caches exist now
    bomb = gzip.compress(b"[" + b",".join([b"{}"] * 3_000_000) + b"]", compresslevel=9)
    assert len(bomb) < 10_000
    service = psutil.Process(process.pid)
    before = service.memory_info().rss
    reset_peak(process.pid)
    status, answer, _ = await post(target, bomb, JSON | {"Content-Encoding": "gzip"})
    grown = max(peak_rss(process.pid), service.memory_info().rss) - before
    assert status == 413 and answer["max_events"] == 50_000, answer
    assert grown < 100 * MiB, f"ingest grew by {grown / MiB:.1f} MiB"
    assert (await post(target, b'{"still": "alive"}', JSON))[0] == 200


# -- the data API: /records is a push, /batches is bounded like one ----------------------------------------------


async def test_records_answers_a_locked_model_misfit_422_like_a_push(
    ingest: HostedIngest, pool: asyncpg.Pool, storage_name: str, settings: Settings
) -> None:
    target = make_target(ingest, storage_name)
    await set_model_and_lock(pool, storage_name, {"n": 1})
    records = f"{ingest.url}/api/storages/{storage_name}/records"
    status, answer, _ = await post(records, b'[{"n": 2}, {"n": "abc"}]', JSON)
    assert status == 422 and [(m["index"], m["field"]) for m in answer["misfits"]] == [(1, "n")], answer
    assert (await post(records, b'{"n": 3, "_id": "r1"}', JSON))[:2] == (200, {"accepted": 1})
    [record] = await read_topic(settings.kafka_bootstrap, target.topic, 1)
    assert event_id(record) == "r1"
    unknown = await post(f"{ingest.url}/api/storages/no_such_storage/records", b"{}", JSON)
    assert unknown[0] == 404 and "error" in unknown[1]


async def test_records_past_the_cap_is_413_like_a_push(small_ingest: HostedIngest, storage_name: str) -> None:
    make_target(small_ingest, storage_name)
    records = f"{small_ingest.url}/api/storages/{storage_name}/records"
    status, answer, _ = await post(records, b"{}\n" * (SMALL_MAX_EVENTS + 1), NDJSON)
    assert (status, answer["max_events"]) == (413, SMALL_MAX_EVENTS)


async def test_a_batch_gzip_bomb_is_413(batch_ingest: HostedIngest, storage_name: str) -> None:
    make_target(batch_ingest, storage_name)
    batches = f"{batch_ingest.url}/api/storages/{storage_name}/batches?mode=append"
    gzipped = NDJSON | {"Content-Encoding": "gzip"}
    # 16 MiB of valid lines from a few KiB: refused once the inflated body passes the batch limit.
    bomb = gzip.compress(b'{"a": 1}\n' * (16 * MiB // 9), compresslevel=9)
    status, answer, _ = await post(batches, bomb, gzipped)
    assert status == 413 and answer["limit"] == BATCH_LIMIT and "after gunzip" in answer["error"], answer
    # One line that never ends: refused once it is longer than a whole push body may be.
    endless = gzip.compress(b'{"a": "' + b"0" * (4 * MiB), compresslevel=9)
    status, answer, _ = await post(batches, endless, gzipped)
    assert status == 413 and answer["limit"] == SMALL_LIMIT, answer
    status, answer, _ = await post(batches, b"x" * (BATCH_LIMIT + 1), NDJSON)
    assert status == 413 and "as sent" in answer["error"], answer
    assert batch_ingest.service.budget.used == 0
    # An honest batch still loads.
    status, answer, _ = await post(batches, gzip.compress(b'{"a": 1}\n{"a": 2}\n'), gzipped)
    assert (status, answer["rows"]) == (200, 2), answer


async def test_a_batch_record_larger_than_kafka_takes_is_413_not_a_retry(
    ingest: HostedIngest, storage_name: str
) -> None:
    make_target(ingest, storage_name)
    batches = f"{ingest.url}/api/storages/{storage_name}/batches?mode=append"
    body = b'{"a": 1}\n' + orjson.dumps({"big": "x" * 1_100_000}) + b"\n"
    status, answer, _ = await post(batches, body, NDJSON)
    assert (status, answer["index"]) == (413, 1), answer
