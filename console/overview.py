"""The overview: each service's health and version, events/s in and rows/s written, lag, rejects, latest runs."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from console.backend import Backend, BackendError
from console.rendering import render
from headrace.kafka.topics import Topics
from headrace.settings import SERVICES

EVENTS_IN = "headrace_ingest_events_accepted_total"
ROWS_WRITTEN = "headrace_transform_rows_written_total"
LAG = "headrace_transform_consumer_lag"
DEAD_LETTERS = "headrace_transform_dead_letters_total"
# A rate needs two scrapes at least this far apart; a reload sooner shows the rate of the previous pair.
MIN_INTERVAL_SECONDS = 1.0
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str | None, names: frozenset[str]) -> list[tuple[str, dict[str, str], float]]:
    """The samples of these metrics in a Prometheus text exposition, as (name, labels, value).

    Only the lines of the wanted metrics are parsed: a full parse of transform's exposition (histograms per storage)
    costs more than the rest of the page.
    """
    found = []
    for line in (text or "").splitlines():
        if not line.startswith(tuple(names)):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        if name not in names:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        found.append((name, dict(LABEL.findall(labels)), number))
    return found


def total(text: str | None, found: list[tuple[str, dict[str, str], float]], name: str) -> float | None:
    """A counter summed over its labels; 0 when the service answered without it (a labelled counter shows no
    sample before its first increment), None when the service did not answer."""
    if text is None:
        return None
    return sum(value for sample, _, value in found if sample == name)


class Rates:
    """Per-second rates of counters from successive scrapes, the previous scrape kept in memory."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[float, float]] = {}
        self._shown: dict[str, float | None] = {}

    def rate(self, key: str, value: float | None, now: float | None = None) -> float | None:
        if value is None:
            return None
        now = time.monotonic() if now is None else now
        before = self._previous.get(key)
        if before is None or value < before[1]:  # first scrape, or the service restarted and its counter with it
            self._previous[key] = (now, value)
            self._shown[key] = None
            return None
        elapsed = now - before[0]
        if elapsed < MIN_INTERVAL_SECONDS:
            return self._shown.get(key)
        self._previous[key] = (now, value)
        self._shown[key] = (value - before[1]) / elapsed
        return self._shown[key]


class OverviewPage:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.rates = Rates()
        self.topics = Topics(backend.settings.topic_prefix)

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.show)

    async def _service(self, name: str) -> dict[str, Any]:
        health, ready = await asyncio.gather(self._json(name, "/healthz"), self._json(name, "/readyz"))
        return {
            "name": name,
            "url": self.backend.settings.service_url(name),
            "alive": health is not None,
            "ready": bool(ready and ready.get("ready")),
            "version": (health or {}).get("version"),
        }

    async def _json(self, service: str, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.backend.get(service, path)
        except BackendError:
            return None
        return found

    async def show(self, request: web.Request) -> web.Response:
        others = [s for s in SERVICES if s != "console"]
        found = await self.backend.gather(
            services=asyncio.gather(*(self._service(name) for name in others)),
            ingest=self.backend.text("ingest", "/metrics"),
            transform=self.backend.text("transform", "/metrics"),
            storages=self.backend.get("ingest", "/api/storages", params={"stats": "true"}),
            exports=self.backend.get("exporter", "/api/exports"),
            flows=self.backend.get("transform", "/api/flows"),
        )
        ingest = samples(found["ingest"], frozenset({EVENTS_IN}))
        transform = samples(found["transform"], frozenset({ROWS_WRITTEN, LAG, DEAD_LETTERS}))
        lag: dict[str, float] = defaultdict(float)
        for name, labels, value in transform:
            if name == LAG and "topic" in labels:
                lag[self.topics.storage_of_ingest_topic(labels["topic"])] += value
        storages = _listed(found["storages"])
        exports = _listed(found["exports"])
        flows = _listed(found["flows"])
        return render(
            request,
            "overview.html",
            services=found["services"],
            events_per_second=self.rates.rate("events", total(found["ingest"], ingest, EVENTS_IN)),
            rows_per_second=self.rates.rate("rows", total(found["transform"], transform, ROWS_WRITTEN)),
            lag=sorted(lag.items()),
            dead_letters=total(found["transform"], transform, DEAD_LETTERS),
            rejected=[(s["name"], s.get("rejected_waiting", 0)) for s in storages if s.get("rejected_waiting")],
            export_runs=[e for e in exports if e.get("last_run")],
            flow_runs=[f for f in flows if f.get("last_run")],
            failures={k: v.message for k, v in found.items() if isinstance(v, BackendError)},
        )


def _listed(found: Any) -> list[dict[str, Any]]:
    return found if isinstance(found, list) else []
