"""The ingest service's own Prometheus metrics; requests by route and status come from headrace.metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter(
    "headrace_ingest_events_accepted_total", "Events Kafka acknowledged for a push, by storage", ["storage"]
)
EVENTS_REJECTED = Counter(
    "headrace_ingest_events_rejected_total",
    "Events refused, by reason (a body that never split into events counts as one)",
    ["reason"],
)
RECEIVED_BYTES = Counter("headrace_ingest_received_bytes_total", "Push body bytes read, as sent (before gunzip)")
DECODED_BYTES = Counter("headrace_ingest_decoded_bytes_total", "Push body bytes after gunzip")
PUSH_LATENCY = Histogram(
    "headrace_ingest_push_duration_seconds",
    "Time from a push's arrival to its answer",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PRODUCE_LATENCY = Histogram(
    "headrace_ingest_kafka_produce_duration_seconds",
    "Time for Kafka to acknowledge every event of one push",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUSHES_IN_FLIGHT = Gauge("headrace_ingest_pushes_in_flight", "Pushes being answered right now")
