"""A flow's graph as an inline SVG: storages and steps as two kinds of node, left to right, coloured by last status."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from console.graph_layout import Layout, Point, Route, crossings, layout

__all__ = ["Layout", "Route", "crossings", "layout", "render_flow_svg", "schedule_text"]

NAME_CHARS = 21  # what fits a box's width at the default font size
TITLE_CHARS = 2000
_CLASS_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

# Scoped to .flow-graph: a <style> inside inline SVG applies to the whole page. The console's stylesheet, loaded
# after, overrides these; they are here so that the SVG also renders alone (a saved file, a test's screenshot).
STYLE = """
.flow-graph{font:12px system-ui,-apple-system,"Segoe UI",sans-serif}
.flow-graph .node .shape{fill:#fff;stroke:#8a94a6;stroke-width:1.5}
.flow-graph .node.storage .shape{fill:#f3f6fb}
.flow-graph .node.storage .rim{fill:none;stroke:#8a94a6;stroke-width:1.5}
.flow-graph .node .name{font-weight:600;fill:#1f2430}
.flow-graph .node .detail{fill:#5b6475;font-size:11px}
.flow-graph .node.status-succeeded .shape{fill:#e7f5ec;stroke:#1e8e3e}
.flow-graph .node.status-failed .shape{fill:#fdecea;stroke:#d93025}
.flow-graph .node.status-upstream_failed .shape{fill:#fef3e0;stroke:#e37400}
.flow-graph .node.status-running .shape{fill:#e8f0fe;stroke:#1a73e8}
.flow-graph .node.status-skipped .shape{fill:#f1f3f4;stroke:#9aa0a6;stroke-dasharray:4 3}
.flow-graph .node.selected .shape{stroke:#111;stroke-width:3}
.flow-graph a:hover .shape,.flow-graph a:focus .shape{stroke-width:2.5}
.flow-graph .edge{fill:none;stroke:#9aa3b2;stroke-width:1.4}
.flow-graph .edge.needs{stroke-dasharray:5 4}
.flow-graph .edge.selected{stroke:#333;stroke-width:2}
.flow-graph .arrow-head{fill:#9aa3b2}
.flow-graph .empty{fill:#5b6475}
""".strip()


def render_flow_svg(graph: dict[str, Any], selected: str | None = None) -> str:
    """The graph route's JSON ({"flow", "nodes", "edges", …}) drawn as one `<svg>` element; `selected` is the id
    of the node to highlight (its edges too)."""
    # A node listed twice would be drawn twice over itself: the first one counts.
    unique: dict[str, Mapping[str, Any]] = {}
    for node in graph.get("nodes") or []:
        if isinstance(node, Mapping) and "id" in node:
            unique.setdefault(str(node["id"]), node)
    nodes = list(unique.values())
    edges = [e for e in graph.get("edges") or [] if isinstance(e, Mapping) and "from" in e and "to" in e]
    flow = str(graph.get("flow") or "")
    placed = layout(nodes, edges)
    width, height = (placed.width, placed.height) if nodes else (240.0, 48.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" data-flow="{_attr(flow)}"'
        f' viewBox="0 0 {_num(width)} {_num(height)}" width="{_num(width)}" height="{_num(height)}"'
        f' role="img" aria-label="{_attr(f"dataflow {flow}")}">',
        f"<title>{_text(f'dataflow {flow}')}</title>",
        f"<style>{STYLE}</style>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"'
        ' orient="auto-start-reverse"><path class="arrow-head" d="M0,0L10,5L0,10z"/></marker></defs>',
    ]
    if not nodes:
        parts.append('<text class="empty" x="16" y="28">no steps</text>')
    names = {str(n["id"]): str(n.get("name") or n["id"]) for n in nodes}
    parts.append('<g class="edges">')
    parts += [_edge(route, names, selected) for route in placed.routes]
    parts.append('</g><g class="nodes">')
    parts += [_node(n, placed, selected) for n in nodes]
    parts.append("</g></svg>")
    return "".join(parts)


def schedule_text(schedule: Any) -> str:
    """A step's schedule in a few characters: "cron 0 6 * * *", "every 1h", or "manual" when it has none."""
    if not isinstance(schedule, Mapping) or not schedule:
        return "manual"
    if schedule.get("cron"):
        return f"cron {schedule['cron']}"
    every = schedule.get("every_seconds", schedule.get("every"))
    if isinstance(every, int | float) and not isinstance(every, bool):
        return f"every {_seconds(float(every))}"
    if every:
        return f"every {every}"
    return "manual"


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def _node(node: Mapping[str, Any], placed: Layout, selected: str | None) -> str:
    node_id = str(node["id"])
    kind = "storage" if node.get("kind") == "storage" else "step"
    name = str(node.get("name") or node_id)
    status = node.get("last_status")
    classes = ["node", kind, f"status-{_class(status) if status else 'none'}"]
    if node_id == selected:
        classes.append("selected")
    left, top, _, _ = placed.box(node_id)
    (x, y), (w, h) = placed.positions[node_id], placed.sizes[node_id]
    if kind == "storage":
        title = [f"storage {name}"]
        shape = _cylinder(left, top, w, h)
        lines = [(_short(name), "name", y + 6)]
    else:
        detail = f"{node.get('type') or 'step'} · {schedule_text(node.get('schedule'))}"
        title = [f"step {name}", f"type: {node.get('type') or '?'}", f"schedule: {schedule_text(node.get('schedule'))}"]
        title.append(f"last run: {status or 'never'}")
        shape = f'<rect class="shape" x="{_num(left)}" y="{_num(top)}" width="{_num(w)}" height="{_num(h)}" rx="4"/>'
        lines = [(_short(name), "name", y - 3), (_short(detail, NAME_CHARS + 6), "detail", y + 13)]
    texts = "".join(
        f'<text class="{css}" x="{_num(x)}" y="{_num(baseline)}" text-anchor="middle">{_text(line)}</text>'
        for line, css, baseline in lines
    )
    return (
        f'<a href="{_attr("?node=" + quote(node_id, safe=""))}">'
        f'<g class="{_attr(" ".join(classes))}" data-id="{_attr(node_id)}">'
        f"<title>{_text(chr(10).join(title)[:TITLE_CHARS])}</title>{shape}{texts}</g></a>"
    )


def _cylinder(left: float, top: float, w: float, h: float) -> str:
    """A storage: a squat cylinder, the usual picture of a table, with its rim drawn as a second arc."""
    ry = min(6.0, h / 6)
    rx = w / 2
    body = (
        f"M{_num(left)},{_num(top + ry)}a{_num(rx)},{_num(ry)} 0 0 1 {_num(w)},0v{_num(h - 2 * ry)}"
        f"a{_num(rx)},{_num(ry)} 0 0 1 {_num(-w)},0z"
    )
    rim = f"M{_num(left)},{_num(top + ry)}a{_num(rx)},{_num(ry)} 0 0 0 {_num(w)},0"
    return f'<path class="shape" d="{body}"/><path class="rim" d="{rim}"/>'


def _edge(route: Route, names: dict[str, str], selected: str | None) -> str:
    kind = _class(route.kind) or "edge"
    classes = f"edge {kind}" + (" selected" if selected in (route.source, route.target) else "")
    title = f"{names.get(route.source, route.source)} → {names.get(route.target, route.target)} ({route.kind})"
    return (
        f'<path class="{_attr(classes)}" data-from="{_attr(route.source)}" data-to="{_attr(route.target)}"'
        f' d="{_path(route.points)}" marker-end="url(#arrow)"><title>{_text(title)}</title></path>'
    )


def _path(points: tuple[Point, ...]) -> str:
    """Straight where a point follows another at the same height (across a dummy's column), elsewhere a cubic
    curve leaving and entering horizontally, so that edges read left to right."""
    (x, y), rest = points[0], points[1:]
    d = [f"M{_num(x)},{_num(y)}"]
    for nx, ny in rest:
        if ny == y:
            d.append(f"L{_num(nx)},{_num(ny)}")
        else:
            mid = (x + nx) / 2
            d.append(f"C{_num(mid)},{_num(y)} {_num(mid)},{_num(ny)} {_num(nx)},{_num(ny)}")
        x, y = nx, ny
    return "".join(d)


def _short(text: str, limit: int = NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _class(value: Any) -> str:
    """A value made safe as one CSS class name (statuses and edge kinds come from the API, but are still data)."""
    return _CLASS_UNSAFE.sub("-", str(value)).strip("-")[:40]


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _attr(value: str) -> str:
    return escape(value, quote=True)


def _text(value: str) -> str:
    return escape(value, quote=True)
