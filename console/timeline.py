"""One flow run as a Gantt chart in inline SVG: a row per step, a bar per attempt, on a shared time axis."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

LABEL_WIDTH = 180.0
PLOT_WIDTH = 600.0
DURATION_WIDTH = 110.0
ROW_HEIGHT = 26.0
BAR_HEIGHT = 16.0
AXIS_HEIGHT = 28.0
HEADER_HEIGHT = 24.0
MARGIN = 12.0
LABEL_CHARS = 24
MAX_TICKS = 8
MIN_BAR = 2.0  # a step of a few milliseconds still shows
PLACEHOLDER_WIDTH = 12.0
# Tick steps that read well on a clock: seconds, minutes, hours, days.
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# What a step row says when the step ran no attempt of its own.
NOT_RUN = {"upstream_failed": "upstream failed", "skipped": "skipped (kept)", None: "not started"}
_CLASS_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

STYLE = """
.flow-timeline{font:12px system-ui,-apple-system,"Segoe UI",sans-serif}
.flow-timeline .label,.flow-timeline .header{fill:#1f2430}
.flow-timeline .duration,.flow-timeline .tick text{fill:#5b6475;font-size:11px}
.flow-timeline .tick line{stroke:#e3e6eb}
.flow-timeline .axis{stroke:#8a94a6}
.flow-timeline .bar{fill:#c6ccd6}
.flow-timeline .bar.status-succeeded{fill:#34a853}
.flow-timeline .bar.status-failed{fill:#d93025}
.flow-timeline .bar.status-running{fill:#1a73e8}
.flow-timeline .bar.placeholder{fill:none;stroke:#9aa0a6;stroke-dasharray:3 2}
.flow-timeline .bar.placeholder.status-upstream_failed{stroke:#e37400}
""".strip()


@dataclass(frozen=True)
class Attempt:
    number: int
    status: str | None
    start: datetime | None
    end: datetime | None  # None while it runs
    record: Mapping[str, Any]


def render_timeline_svg(run: dict[str, Any]) -> str:
    """A run as GET /api/flows/{name}/runs/{id} answers it: {"status", "started_at", "finished_at", "steps": [one
    record per attempt: {"step", "attempt", "status", "started_at", "finished_at", "duration_seconds", …}]}.
    Times are ISO 8601 strings or datetimes. A running attempt extends to the run's end, else to `run["now"]` when
    the caller gives it, else to the present. A step record without `started_at` (a step the caller lists before
    it starts) is drawn as a placeholder, like steps that were skipped or whose upstream failed."""
    rows = _rows(run)
    begin = _time(run.get("started_at"))
    starts = [a.start for attempts in rows.values() for a in attempts if a.start is not None]
    begin = min([begin, *starts] if begin else starts, default=None)
    now = _time(run.get("finished_at")) or _time(run.get("now")) or datetime.now(UTC)
    ends = [a.end or now for attempts in rows.values() for a in attempts if a.start is not None]
    if run.get("status") == "running" or any(a.end is None and a.start for v in rows.values() for a in v):
        ends.append(now)
    span = max(((end - begin).total_seconds() for end in ends), default=0.0) if begin else 0.0
    tick = _tick(span)
    total = max(tick * max(1, -(-span // tick)), 1.0)
    scale = PLOT_WIDTH / total
    left = MARGIN + LABEL_WIDTH
    top = MARGIN + HEADER_HEIGHT + AXIS_HEIGHT
    width = left + PLOT_WIDTH + DURATION_WIDTH + MARGIN
    height = top + ROW_HEIGHT * max(len(rows), 1) + MARGIN

    def x_of(moment: datetime | None) -> float:
        return left + ((moment - begin).total_seconds() * scale if moment and begin else 0.0)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-timeline" data-run="{_e(run.get("id"))}"'
        f' viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" height="{_n(height)}" role="img"'
        f' aria-label="{_e(_header(run))}">',
        f"<title>{_e(_header(run))}</title><style>{STYLE}</style>",
        f'<text class="header" x="{_n(MARGIN)}" y="{_n(MARGIN + 14)}">{_e(_header(run))}</text>',
        _axis(left, MARGIN + HEADER_HEIGHT, top + ROW_HEIGHT * max(len(rows), 1), total, tick, scale),
    ]
    if not rows:
        parts.append(f'<text class="label" x="{_n(MARGIN)}" y="{_n(top + 17)}">no step ran</text>')
    for index, (step, attempts) in enumerate(rows.items()):
        y = top + index * ROW_HEIGHT
        parts.append(_row(step, attempts, y, x_of, now))
    parts.append("</svg>")
    return "".join(parts)


def _rows(run: Mapping[str, Any]) -> dict[str, list[Attempt]]:
    """Attempts grouped by step, steps in the order they first started (the API's order: started_at, attempt)."""
    rows: dict[str, list[Attempt]] = {}
    for record in run.get("steps") or []:
        if not isinstance(record, Mapping) or record.get("step") is None:
            continue
        start = _time(record.get("started_at"))
        status = record.get("status")
        attempt = Attempt(
            int(record.get("attempt") or 0),
            str(status) if status is not None else None,
            start,
            _time(record.get("finished_at")),
            record,
        )
        rows.setdefault(str(record["step"]), []).append(attempt)
    return rows


def _row(
    step: str,
    attempts: list[Attempt],
    y: float,
    x_of: Callable[[datetime | None], float],
    now: datetime,
) -> str:
    last = attempts[-1]
    status = last.status or "none"
    bar_y = y + (ROW_HEIGHT - BAR_HEIGHT) / 2
    parts = [
        f'<g class="row" data-step="{_e(step)}" data-status="{_e(status)}">',
        f"<title>{_e(_tooltip(step, attempts, now))}</title>",
        f'<text class="label" x="{_n(MARGIN)}" y="{_n(y + 17)}">{_e(_short(step))}</text>',
    ]
    for attempt in attempts:
        ran = attempt.start is not None and attempt.number > 0
        x = x_of(attempt.start)
        if ran:
            w = max(x_of(attempt.end or now) - x, MIN_BAR)
            css = f"bar status-{_class(attempt.status)}"
        else:
            w = PLACEHOLDER_WIDTH
            css = f"bar placeholder status-{_class(attempt.status)}"
        parts.append(
            f'<rect class="{_e(css)}" data-step="{_e(step)}" data-attempt="{attempt.number}" x="{_n(x)}"'
            f' y="{_n(bar_y)}" width="{_n(w)}" height="{_n(BAR_HEIGHT)}" rx="2"/>'
        )
    parts.append(
        f'<text class="duration" x="{_n(x_of(None) + PLOT_WIDTH + 8)}" y="{_n(y + 17)}">'
        f"{_e(_summary(attempts, now))}</text></g>"
    )
    return "".join(parts)


def _summary(attempts: list[Attempt], now: datetime) -> str:
    """The duration column: the step's time over all its attempts, with how many when there were several."""
    ran = [a for a in attempts if a.start is not None and a.number > 0]
    if not ran:
        return NOT_RUN.get(attempts[-1].status, attempts[-1].status or "not started")
    assert ran[0].start is not None
    seconds = ((ran[-1].end or now) - ran[0].start).total_seconds()
    text = duration_text(seconds) + ("…" if ran[-1].end is None else "")
    return text + (f" ({len(ran)} attempts)" if len(ran) > 1 else "")


def _tooltip(step: str, attempts: list[Attempt], now: datetime) -> str:
    lines = [step]
    for a in attempts:
        if a.start is None or a.number == 0:
            lines.append(NOT_RUN.get(a.status, a.status or "not started"))
            continue
        took = duration_text(((a.end or now) - a.start).total_seconds())
        line = f"attempt {a.number}: {a.status or '?'}, {took}"
        for key in ("rows_read", "rows_written"):
            if a.record.get(key) is not None:
                line += f", {key.replace('_', ' ')} {a.record[key]}"
        lines.append(line)
        if a.record.get("error"):
            lines.append(f"  {str(a.record['error'])[:300]}")
    return "\n".join(lines)


def _header(run: Mapping[str, Any]) -> str:
    seconds = run.get("duration_seconds")
    took = f" · {duration_text(float(seconds))}" if isinstance(seconds, int | float) else ""
    return f"run {str(run.get('id') or '')[:8]} · {run.get('status') or '?'}{took}"


def _axis(left: float, top: float, bottom: float, total: float, tick: float, scale: float) -> str:
    parts = [f'<g class="axis-ticks"><line class="axis" x1="{_n(left)}" y1="{_n(top + AXIS_HEIGHT - 4)}"']
    parts.append(f' x2="{_n(left + PLOT_WIDTH)}" y2="{_n(top + AXIS_HEIGHT - 4)}"/>')
    count = round(total / tick)
    for i in range(count + 1):
        x = left + i * tick * scale
        parts.append(
            f'<g class="tick"><line x1="{_n(x)}" y1="{_n(top + AXIS_HEIGHT - 8)}" x2="{_n(x)}" y2="{_n(bottom)}"/>'
            f'<text x="{_n(x)}" y="{_n(top + 14)}" text-anchor="middle">{_e(tick_text(i * tick))}</text></g>'
        )
    parts.append("</g>")
    return "".join(parts)


def _tick(span: float) -> float:
    """The smallest readable step giving at most MAX_TICKS intervals over the span."""
    for step in TICK_STEPS:
        if span <= step * MAX_TICKS:
            return float(step)
    return float(86400 * -(-span // (86400 * MAX_TICKS)))


def tick_text(seconds: float) -> str:
    """An axis label: 0s, 45s, 1m30s, 2h, 1h30m, 2d."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    pieces = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{v}{u}" for v, u in pieces if v]
    return "".join(shown[:2]) or "0s"


def duration_text(seconds: float) -> str:
    """A step's duration: 0.42s, 12.3s, 4m05s, 1h02m."""
    if seconds < 10:
        return f"{max(seconds, 0):.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _class(value: Any) -> str:
    """A status made safe as one CSS class name ("none" for a step without one)."""
    if value is None:
        return "none"
    return _CLASS_UNSAFE.sub("-", str(value)).strip("-")[:40] or "none"


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)
