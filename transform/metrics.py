"""The transform worker's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS_WRITTEN = Counter("headrace_transform_rows_written_total", "Rows written into storages", ["storage", "load_mode"])
ROWS_DELETED = Counter("headrace_transform_rows_deleted_total", "Rows merge deletes removed", ["storage"])
ROWS_REJECTED = Counter(
    "headrace_transform_rows_rejected_total",
    "Rows sent to rejected rows (locked model, ETL, key, refused by Postgres)",
    ["storage"],
)
ROWS_FILTERED = Counter(
    "headrace_transform_rows_filtered_total", "Records the storage's ETL filter left out", ["storage"]
)
DUPLICATES = Counter(
    "headrace_transform_duplicates_dropped_total",
    "Events dropped because their id was already written (within the window) or their batch was applied",
    ["storage"],
)
BATCHES = Counter("headrace_transform_batches_total", "Batches applied or failed", ["storage", "result"])
DEAD_LETTERS = Counter(
    "headrace_transform_dead_letters_total",
    "Events sent to the dead-letter topic, by the storage of the topic they came from and reason",
    ["storage", "reason"],
)
ISOLATED = Counter(
    "headrace_transform_isolated_events_total",
    "Events a failed write was narrowed down to, set aside so the partition moves on",
    ["storage", "outcome"],
)
CONSUMER_RESTARTS = Counter(
    "headrace_transform_consumer_restarts_total", "Consumers replaced because they stopped fetching"
)
WRITE_RETRIES = Counter(
    "headrace_transform_write_retries_total", "Writes retried after Postgres was away or contended", ["reason"]
)
FAST_PATH = Counter(
    "headrace_transform_fast_path_polls_total",
    "Polls of a storage's topic written column-wise (written) or handed to the row path (row_path), by storage",
    ["storage", "outcome"],
)
TOPIC_RESETS = Counter(
    "headrace_transform_topic_resets_total",
    "Partitions read from their beginning because their stored position belongs to another topic incarnation",
    ["topic"],
)
MODEL_CHANGES = Counter("headrace_transform_model_changes_total", "Model changes applied", ["storage"])
BATCH_ROWS = Histogram(
    "headrace_transform_batch_rows",
    "Events per write batch",
    ["load_mode"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
BATCH_SECONDS = Histogram(
    "headrace_transform_batch_seconds",
    "Time to write one batch to Postgres, commit included",
    ["load_mode"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "headrace_transform_consumer_lag",
    "Events in a partition not yet written (highwater - position)",
    ["storage", "topic", "partition"],
)
EVENT_IDS_PRUNED = Counter("headrace_transform_event_ids_pruned_total", "Event ids forgotten past the window")
