"""The ingest HTTP service: authenticates pushes, parses them, and answers once Kafka holds every event."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from headrace.catalog import Catalog, Storage, StorageNotFound
from headrace.catalog.storages import hash_token
from headrace.kafka import Topics, create_topics, producer
from headrace.models import Model
from headrace.web import HttpService, json_error
from headrace.web.auth import JSON_TYPES, OPEN_PATHS
from headrace.web.jobs import JobRoutes, Jobs
from headrace.web.service import json_response
from ingest import metrics
from ingest.admin import StorageRoutes
from ingest.body import CSV_TYPES, NDJSON_TYPES, PushRefused, admit, body_format, parse_records, read_body
from ingest.budget import ByteBudget, Overloaded, Reservation
from ingest.collectors.api import CollectorRoutes
from ingest.collectors.scheduler import start_collector_scheduler, stop_collector_scheduler
from ingest.data_api import DataRoutes
from ingest.host_keys import HostKeyRoutes
from ingest.imports import ImportRoutes
from ingest.push import Event, build_events

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
PUSH_ROUTE = "/api/data_source/{storage_id}/push/{token}"
# Hashed when the storage is unknown, so an unknown id costs the same as a wrong token.
_DUMMY_HASH = hash_token("no such token")
# Unknown ids are cached too (so a flood of them does not reach Postgres), hence a bound on the cache.
_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class _Known:
    storage: Storage | None
    token_hashes: tuple[bytes, ...]
    model: Model | None  # only loaded for a locked storage, the one case the push path checks values against it
    expires: float


_UNKNOWN = _Known(None, (), None, 0.0)
# How a route finds the storage a request loads into: the push URL's id and token, or the data API's name.
Resolver = Callable[[web.Request], Awaitable[_Known]]


class IngestService(HttpService):
    name = "ingest"
    # The body is inflated by ingest/body.py with a bound; aiohttp's own inflating would happen before any check.
    handler_args = {"auto_decompress": False}
    # The push URL carries its own token (and checks its own content types); the API documents are public.
    open_paths = OPEN_PATHS | {PUSH_ROUTE}
    openapi_document = OPENAPI_PATH
    body_types = {
        "/api/storages/{name}/records": JSON_TYPES | NDJSON_TYPES,
        "/api/storages/{name}/batches": NDJSON_TYPES | CSV_TYPES | JSON_TYPES,
    }

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.topics = Topics(settings.topic_prefix)
        self.producer: AIOKafkaProducer | None = None
        self.catalog: Catalog | None = None
        self.jobs: Jobs | None = None
        self.budget = ByteBudget(settings.ingest_in_flight_bytes)
        self._known: dict[uuid.UUID, _Known] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[_Known]] = {}
        self._topics_ready: dict[str, asyncio.Future[list[str]]] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(PUSH_ROUTE, self.push)
        StorageRoutes(self).register(router)
        CollectorRoutes(self).register(router)
        DataRoutes(self).register(router)
        ImportRoutes(self).register(router)
        HostKeyRoutes(self).register(router)
        JobRoutes(self).register(router)

    def kafka_client(self) -> AIOKafkaClient | None:
        return self.producer.client if self.producer is not None else None

    async def start(self) -> None:
        await super().start()
        assert self.pool is not None
        self.catalog = Catalog(self.pool, max_columns=self.settings.max_columns)
        self.jobs = Jobs(self.pool, self.name)
        self.producer = producer(self.settings)
        await self.producer.start()
        self.collector_scheduler = start_collector_scheduler(self.settings, self.catalog, self.producer)

    async def drain(self, timeout: float = 10.0) -> None:
        """Refuse new pushes (503, so clients go elsewhere) and wait for those already inside to be answered."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("pushes still in flight at shutdown", extra={"in_flight": self._in_flight})

    async def stop(self) -> None:
        """Flush what in-flight pushes produced; the HTTP runner has already stopped accepting and drained."""
        await stop_collector_scheduler(getattr(self, "collector_scheduler", None))
        if self.jobs is not None:
            await self.jobs.stop()
        if self.producer is not None:
            await self.producer.flush()
            await self.producer.stop()
        await super().stop()

    # -- storages, tokens and models, cached --------------------------------------------------------------------

    def forget(self, storage_id: uuid.UUID, topic: str | None = None) -> None:
        """Drop a storage from the cache, so a change made through this process shows at once; and, once the storage
        and its topic are deleted, the topic from those known to exist."""
        self._known.pop(storage_id, None)
        if topic is not None:
            self._topics_ready.pop(topic, None)

    async def _load(self, storage_id: uuid.UUID) -> _Known:
        assert self.catalog is not None
        try:
            storage = await self.catalog.get_by_id(storage_id)
            hashes = tuple(await self.catalog.token_hashes(storage_id))
            model = await self.catalog.model(storage_id) if storage.locked else None
        except StorageNotFound:
            storage, hashes, model = None, (), None
        return _Known(storage, hashes, model, time.monotonic() + self.settings.ingest_cache_seconds)

    async def _storage(self, storage_id: uuid.UUID) -> _Known:
        known = self._known.get(storage_id)
        if known is not None and known.expires >= time.monotonic():
            return known
        # One catalog query per storage however many pushes miss the cache at once.
        loading = self._loading.get(storage_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(storage_id))
            self._loading[storage_id] = loading
            try:
                known = await loading
            finally:
                del self._loading[storage_id]
            if len(self._known) >= _CACHE_ENTRIES:
                self._known.pop(next(iter(self._known)))
            self._known[storage_id] = known
            return known
        return await asyncio.shield(loading)

    async def authenticate(self, request: web.Request) -> _Known:
        """The storage the URL names, or the unknown marker when the storage or the token is wrong (alike)."""
        try:
            storage_id = uuid.UUID(request.match_info["storage_id"])
        except ValueError:
            storage_id = None
        known = await self._storage(storage_id) if storage_id else _UNKNOWN
        presented = hash_token(request.match_info["token"])
        matched = False
        for expected in known.token_hashes or (_DUMMY_HASH,):
            matched |= hmac.compare_digest(presented, expected)
        return known if matched and known.storage is not None else _UNKNOWN

    async def _topic_ready(self, topic: str) -> None:
        """Create the storage's topic once per process: a storage made by another path may lack it."""
        ready = self._topics_ready.get(topic)
        if ready is None:
            ready = asyncio.ensure_future(create_topics(self.settings, self.pool, [topic]))
            self._topics_ready[topic] = ready
        try:
            await asyncio.shield(ready)
        except BaseException:
            if self._topics_ready.get(topic) is ready and ready.done():
                del self._topics_ready[topic]
            raise

    # -- the push route, and the data API's /records: one pipeline ---------------------------------------------------

    async def known(self, storage_id: uuid.UUID) -> _Known:
        """A storage with its token hashes and (when locked) its model, from the cache."""
        return await self._storage(storage_id)

    async def push(self, request: web.Request) -> web.Response:
        return await self.accept(request, self._by_token)

    async def _by_token(self, request: web.Request) -> _Known:
        known = await self.authenticate(request)
        if known.storage is None:
            raise PushRefused(404, "not_found", "no storage with this id and token")
        return known

    async def accept(self, request: web.Request, resolve: Resolver) -> web.Response:
        """Read, bound, parse and check a body of events, produce them, and answer once Kafka holds every one."""
        if self._draining:
            metrics.EVENTS_REJECTED.labels("shutting_down").inc()
            return json_error(
                503, "ingest is shutting down, retry", headers={"Retry-After": "1", "Connection": "close"}
            )
        started = time.perf_counter()
        metrics.PUSHES_IN_FLIGHT.inc()
        self._in_flight += 1
        self._idle.clear()
        try:
            with self.budget.reservation() as reservation:
                accepted = await self._accept(request, resolve, reservation)
            return json_response({"accepted": accepted})
        except PushRefused as refused:
            metrics.EVENTS_REJECTED.labels(refused.reason).inc(refused.events)
            return refused.answer()
        except Overloaded as exc:
            metrics.EVENTS_REJECTED.labels("overloaded").inc()
            return json_error(429, f"ingest is overloaded, retry later: {exc}", headers={"Retry-After": "1"})
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
            metrics.PUSHES_IN_FLIGHT.dec()
            metrics.PUSH_LATENCY.observe(time.perf_counter() - started)

    async def _accept(self, request: web.Request, resolve: Resolver, reservation: Reservation) -> int:
        received_ms = int(time.time() * 1000)
        known = await resolve(request)
        storage = known.storage
        assert storage is not None
        kind = body_format(request)
        settings = self.settings
        body, wire = await read_body(
            request, settings.ingest_max_body_bytes, reservation, settings.ingest_read_timeout_seconds
        )
        metrics.RECEIVED_BYTES.inc(wire)
        metrics.DECODED_BYTES.inc(len(body))
        admit(body, kind, reservation, settings.ingest_max_events)
        records = parse_records(body, kind)
        del body
        if known.model is not None:
            _refuse_misfits(known.model, records)
        events = build_events(records, storage.primary_key, request.headers.get("Idempotency-Key"), received_ms)
        del records  # the events hold what Kafka needs; the parsed records can go before the produce waits
        accepted = len(events)
        await self._produce(self.topics.ingest(storage.name), events, received_ms)
        metrics.EVENTS_ACCEPTED.labels(storage.name).inc(accepted)
        return accepted

    async def _produce(self, topic: str, events: list[Event], received_ms: int) -> None:
        """Send every event and wait for all acknowledgements, within the produce deadline; 503 otherwise.

        Consumes `events`: each is dropped once the producer has copied it into its batch.
        """
        if not events:
            return
        assert self.producer is not None
        total = len(events)
        loop = asyncio.get_running_loop()
        timeout = self.settings.ingest_produce_timeout_ms / 1000
        deadline = loop.time() + timeout
        started = time.perf_counter()
        futures: list[asyncio.Future] = []
        failure: BaseException | None = None
        acknowledged = 0
        try:
            # send() itself may wait for metadata (up to request_timeout_ms) when the cluster is away: bounded too.
            async with asyncio.timeout_at(deadline):
                await self._topic_ready(topic)
                send = self.producer.send
                # Popped from the front as they are sent: the producer copied each one, so it can go at once.
                events.reverse()
                while events:
                    value, key, headers = events.pop()
                    futures.append(await send(topic, value=value, key=key, headers=headers, timestamp_ms=received_ms))
                # In order: a batch is acknowledged (or fails) as a whole, so most of these are done when reached.
                # Shielded: the deadline must cancel this wait, not the producer's own futures.
                for future in futures:
                    if future.done():
                        future.result()
                    else:
                        await asyncio.shield(future)
                    acknowledged += 1
        except TimeoutError:
            failure = TimeoutError(f"Kafka did not acknowledge {total - acknowledged} of {total} events in time")
        except (KafkaError, OSError) as exc:
            failure = exc
        if failure is None:
            metrics.PRODUCE_LATENCY.observe(time.perf_counter() - started)
            return
        for future in futures:
            if not future.done():
                # Nobody awaits it any more; retrieving its outcome keeps asyncio from logging it as lost.
                future.add_done_callback(_retrieve)
        log.warning("produce failed", extra={"topic": topic, "error": repr(failure)})
        raise PushRefused(
            503,
            "kafka_unavailable",
            "Kafka did not acknowledge the events; nothing of this push is confirmed, retry it later",
            headers={"Retry-After": str(max(1, round(timeout)))},
            events=total,
        )


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _refuse_misfits(model: Model, records: list[dict[str, Any]]) -> None:
    """422 when a value does not fit a locked column: nothing of the push is produced, and the caller is told."""
    _, misfits = model.plan(records, locked=True)
    if not misfits:
        return
    listed = [{"index": index, "field": m.key, "reason": m.reason} for index, m in sorted(misfits.items())]
    first = listed[0]
    raise PushRefused(
        422,
        "misfit",
        f"the model is locked; element {first['index']}: {first['reason']}",
        {"misfits": listed[:100], "misfit_count": len(listed)},
        events=len(records),
    )
