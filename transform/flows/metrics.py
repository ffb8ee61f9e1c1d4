"""The dataflow metrics of the transform service, labelled by flow (and step)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter("headrace_flow_runs_total", "Flow runs by trigger and result", ["flow", "trigger", "status"])
STEPS = Counter("headrace_flow_step_runs_total", "Step attempts by result", ["flow", "step", "status"])
RETRIES = Counter(
    "headrace_flow_step_retries_total", "Step attempts made again after a transient failure", ["flow", "step"]
)
ROWS_WRITTEN = Counter("headrace_flow_rows_written_total", "Rows steps wrote into their outputs", ["flow", "step"])
ROWS_READ = Counter("headrace_flow_rows_read_total", "Input rows steps read", ["flow", "step"])
DURATION = Histogram(
    "headrace_flow_step_duration_seconds",
    "Time a step attempt took",
    ["flow", "step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
LAST_SUCCESS = Gauge(
    "headrace_flow_last_success_timestamp_seconds", "When the flow last succeeded (Unix time)", ["flow"]
)
SCHEDULE_INTERVAL = Gauge(
    "headrace_flow_schedule_interval_seconds",
    "The longest the flow's schedule leaves between two runs; absent for a flow without a schedule",
    ["flow"],
)
RUNNING = Gauge("headrace_flow_runs_in_progress", "Flow runs going on in this instance")
