"""The console's run timeline without servers: one row per step, bars on a shared time axis, placeholders, escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

from console.timeline import PLOT_WIDTH, duration_text, render_timeline_svg, tick_text

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    """A time as the API writes it (orjson with OPT_UTC_Z)."""
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def attempt(
    step: str, number: int, status: str, start: float | None, end: float | None, **extra: Any
) -> dict[str, Any]:
    return {
        "step": step,
        "attempt": number,
        "status": status,
        "started_at": at(start) if start is not None else None,
        "finished_at": at(end) if end is not None else None,
        "duration_seconds": end - start if start is not None and end is not None else None,
        "rows_read": None,
        "rows_written": None,
        "error": None,
        "transient": False,
    } | extra


def a_run(steps: list[dict[str, Any]], status: str = "failed", end: float | None = 120.0) -> dict[str, Any]:
    return {
        "id": "5f0c7e4a-0000-4000-8000-000000000001",
        "trigger": "schedule",
        "params": {},
        "status": status,
        "rerun_of": None,
        "started_at": at(0),
        "finished_at": at(end) if end is not None else None,
        "duration_seconds": end,
        "error": None,
        "steps": steps,
    }


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def rows(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-step", ""): g for g in svg.iter(f"{SVG}g") if g.get("class") == "row"}


def bars(row: ET.Element) -> list[ET.Element]:
    return row.findall(f"{SVG}rect")


def x_and_width(rect: ET.Element) -> tuple[float, float]:
    return float(rect.get("x", "nan")), float(rect.get("width", "nan"))


def test_one_row_per_step_with_a_bar_per_attempt_on_one_time_axis() -> None:
    run = a_run(
        [
            attempt("lines", 1, "succeeded", 0, 30, rows_read=1000, rows_written=1000),
            attempt("meta", 1, "failed", 30, 40, error="connection lost", transient=True),
            attempt("meta", 2, "succeeded", 45, 60),
            attempt("big", 0, "upstream_failed", 60, 60, error="meta did not succeed"),
            attempt("pivot", 1, "failed", 60, 120, error="boom"),
        ]
    )
    svg = parse(render_timeline_svg(run))
    found = rows(svg)
    assert list(found) == ["lines", "meta", "big", "pivot"]
    assert [g.get("data-status") for g in found.values()] == ["succeeded", "succeeded", "upstream_failed", "failed"]
    lines, meta, big, pivot = (bars(found[s]) for s in found)
    assert [b.get("class") for b in lines] == ["bar status-succeeded"]
    assert [b.get("class") for b in meta] == ["bar status-failed", "bar status-succeeded"]
    assert [b.get("data-attempt") for b in meta] == ["1", "2"]
    assert all(b.get("data-step") == "meta" for b in meta)
    # One scale for all rows: 30 s of `lines` is three times the 10 s of meta's first attempt, and bars follow on.
    (x0, w0), (x1, w1), (x2, _) = x_and_width(lines[0]), x_and_width(meta[0]), x_and_width(meta[1])
    assert abs(w0 - 3 * w1) < 0.2 and abs(x1 - (x0 + w0)) < 0.2 and x2 > x1 + w1
    assert abs(x_and_width(pivot[0])[1] - 2 * w0) < 0.2
    assert "placeholder" in (big[0].get("class") or "").split()
    durations = [next(t.text for t in g.iter(f"{SVG}text") if t.get("class") == "duration") for g in found.values()]
    assert durations == ["30.0s", "30.0s (2 attempts)", "upstream failed", "1m00s"]
    tooltip = found["meta"].find(f"{SVG}title")
    assert tooltip is not None and "connection lost" in (tooltip.text or "")
    assert "rows read 1000" in (found["lines"].findtext(f"{SVG}title") or "")


def test_a_running_step_extends_to_now_and_steps_not_started_are_placeholders() -> None:
    run = a_run(
        [attempt("first", 1, "succeeded", 0, 20), attempt("second", 1, "running", 20, None)],
        status="running",
        end=None,
    )
    run["now"] = at(80)
    run["steps"].append({"step": "third", "status": None})  # the console lists a step not reached yet
    svg = parse(render_timeline_svg(run))
    found = rows(svg)
    (first,), (second,), (third,) = (bars(found[s]) for s in ("first", "second", "third"))
    _, w_first = x_and_width(first)
    _, w_second = x_and_width(second)
    assert abs(w_second - 3 * w_first) < 0.2  # 60 s running against 20 s done
    assert second.get("class") == "bar status-running"
    assert third.get("class") == "bar placeholder status-none"
    assert found["third"].get("data-status") == "none"
    texts = [t.text for t in found["second"].iter(f"{SVG}text")]
    assert texts[-1] == "1m00s…"


def test_a_running_step_of_a_finished_run_stops_at_the_run_end() -> None:
    run = a_run([attempt("only", 1, "running", 0, None)], status="failed", end=50)
    svg = parse(render_timeline_svg(run))
    (bar,) = bars(rows(svg)["only"])
    _, width = x_and_width(bar)
    ticks = [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert ticks[0] == "0s" and ticks[-1] == "50s"
    assert abs(width - PLOT_WIDTH) < 0.2


def test_axis_ticks_are_in_seconds_then_minutes_then_hours() -> None:
    assert [tick_text(s) for s in (0, 5, 60, 90, 3600, 5400, 86400)] == ["0s", "5s", "1m", "1m30s", "1h", "1h30m", "1d"]
    assert [duration_text(s) for s in (0.42, 12.34, 245, 3725)] == ["0.42s", "12.3s", "4m05s", "1h02m"]
    run = a_run([attempt("long", 1, "succeeded", 0, 3000)], status="succeeded", end=3000)
    svg = parse(render_timeline_svg(run))
    ticks = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert ticks[0] == "0s" and ticks[-1] == "50m" and 3 <= len(ticks) <= 9
    assert all(t.endswith("m") for t in ticks[1:])


def test_datetimes_as_well_as_strings() -> None:
    run = a_run([attempt("s", 1, "succeeded", 0, 10)], status="succeeded", end=10)
    run["started_at"], run["finished_at"] = T0, T0 + timedelta(seconds=10)
    run["steps"][0] |= {"started_at": T0, "finished_at": T0 + timedelta(seconds=10)}
    (bar,) = bars(rows(parse(render_timeline_svg(run)))["s"])
    assert abs(x_and_width(bar)[1] - PLOT_WIDTH) < 0.2


def test_names_and_errors_are_escaped() -> None:
    odd = '<x&"y>'
    run = a_run([attempt(odd, 1, '"><b>', 0, 5, error="<script>alert(1)</script>")])
    run["id"] = odd
    raw = render_timeline_svg(run)
    assert odd not in raw and "<script>" not in raw and "<b>" not in raw
    svg = parse(raw)
    row = rows(svg)[odd]
    assert row.findtext(f"{SVG}text") == odd
    (bar,) = bars(row)
    assert bar.get("data-step") == odd
    assert all(c.replace("-", "").replace("_", "").isalnum() for c in (bar.get("class") or "").split())
    assert "<script>" in (row.findtext(f"{SVG}title") or "")


def test_a_run_without_steps_is_still_an_svg() -> None:
    svg = parse(render_timeline_svg(a_run([], status="running", end=None)))
    assert rows(svg) == {}
    assert svg.get("class") == "flow-timeline"
