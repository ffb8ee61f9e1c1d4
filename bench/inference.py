"""Model inference cost per 100k rows (type inference + widening plan), as a ratio to plain JSON parsing of them."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import orjson

from bench.harness import BenchEnv, Figure
from headrace.models import Model

NEEDS_POSTGRES = False
ROWS = 100_000


def sample_rows(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        rows.append(
            orjson.dumps(
                {
                    "event_id": i,
                    "hit_time_utc": f"2021-04-08T10:{i % 60:02d}:{(i * 7) % 60:02d}Z",
                    "visitor": f"v-{rng.randrange(10_000):05d}",
                    "amount": round(rng.random() * 100, 2),
                    "visitor_privacy_consent": rng.random() > 0.1,
                    "page": {"path": f"/p/{i % 50}", "section": "news"},
                    "day": "2021-04-08",
                    "referrer": None if i % 3 else "https://example.org/",
                }
            )
        )
    return rows


def best_of(runs: int, work: Callable[[], object]) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


async def run(env: BenchEnv) -> list[Figure]:
    payloads = sample_rows(ROWS)
    parse_s = best_of(3, lambda: [orjson.loads(p) for p in payloads])

    records = [orjson.loads(p) for p in payloads]
    plan_s = best_of(3, lambda: Model().plan(records))
    return [
        Figure("JSON parsing alone (orjson), per 100k rows", parse_s * 1000, "ms"),
        Figure("model inference (plan) alone, per 100k rows", plan_s * 1000, "ms", baseline=parse_s * 1000),
    ]
