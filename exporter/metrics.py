"""The exporter's Prometheus metrics, labelled by export name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter("headrace_export_runs_total", "Export runs by kind and result", ["export", "kind", "result"])
FILES = Counter("headrace_export_files_total", "Data files delivered", ["export"])
ROWS = Counter("headrace_export_rows_total", "Rows written into delivered files", ["export"])
BYTES = Counter("headrace_export_bytes_total", "Compressed bytes of delivered files", ["export"])
DROPPED = Counter(
    "headrace_export_rows_dropped_total",
    "Rows left out on purpose, by reason (privacy: the consent property said false)",
    ["export", "reason"],
)
UNKNOWN_TIME = Counter(
    "headrace_export_rows_unknown_time_total", "Rows whose event time was missing or unparseable", ["export"]
)
DURATION = Histogram(
    "headrace_export_run_duration_seconds",
    "Time an export run took, from its start to its committed horizon",
    ["export", "kind"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
LAST_SUCCESS = Gauge(
    "headrace_export_last_success_timestamp_seconds", "When the export's last run succeeded (Unix time)", ["export"]
)
SCHEDULE_INTERVAL = Gauge(
    "headrace_export_schedule_interval_seconds",
    "How often the scheduler runs the export (its frequency); absent for an export that is not scheduled",
    ["export"],
)
