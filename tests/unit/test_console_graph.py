"""The console's flow graph without servers: the layered layout's ranks, crossings and spacing, and the SVG it draws."""

from __future__ import annotations

import dataclasses
import itertools
import random
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from console.graph import Layout, crossings, layout, render_flow_svg, schedule_text
from console.graph_layout import is_dummy
from headrace.flows.definitions import parse_flow
from headrace.flows.graph import build_dag
from headrace.flows.lineage import flow_graph
from headrace.flows.validate import Checked

SVG = "{http://www.w3.org/2000/svg}"
SALES = Path(__file__).resolve().parents[2] / "examples" / "sales" / "flow.yaml"


def step(name: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"step:{name}", "kind": "step", "name": name, "type": "etl", "schedule": None} | extra


def storage(name: str) -> dict[str, Any]:
    return {"id": f"storage:{name}", "kind": "storage", "name": name}


def plain(edges: list[tuple[str, str]], order: list[str] | None = None) -> dict[str, Any]:
    """A graph of steps named by the edges (in `order` when given, else in order of appearance)."""
    names = order or list(dict.fromkeys(n for edge in edges for n in edge))
    return {
        "flow": "f",
        "nodes": [step(n) for n in names],
        "edges": [{"from": f"step:{a}", "to": f"step:{b}", "kind": "needs"} for a, b in edges],
    }


def laid_out(graph: dict[str, Any]) -> Layout:
    return layout(graph["nodes"], graph["edges"])


def sales_graph(last: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    flow = parse_flow(yaml.safe_load(SALES.read_text()))
    return flow_graph(flow, Checked(build_dag(flow)), last or {})


def naive(placed: Layout, graph: dict[str, Any]) -> Layout:
    """The same layout with each rank in the input's order of its nodes (dummies in the order of their edges)."""
    order: list[list[str]] = [[] for _ in placed.order]
    for node in [n["id"] for n in graph["nodes"]] + [n for n in placed.ranks if is_dummy(n)]:
        order[placed.ranks[node]].append(node)
    return dataclasses.replace(placed, order=order)


def assert_no_overlap(placed: Layout) -> None:
    boxes = [placed.box(n) for n in placed.nodes]
    for (l1, t1, r1, b1), (l2, t2, r2, b2) in itertools.combinations(boxes, 2):
        apart = r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1
        assert apart, "two boxes overlap"
        if not (r1 <= l2 or r2 <= l1):  # same column: the minimum spacing holds too
            assert min(abs(t2 - b1), abs(t1 - b2)) >= 19.9
    for node in placed.nodes:
        left, top, right, bottom = placed.box(node)
        assert left >= 0 and top >= 0 and right <= placed.width and bottom <= placed.height


def assert_left_to_right(placed: Layout, edges: list[dict[str, str]]) -> None:
    for edge in edges:
        assert placed.ranks[edge["from"]] < placed.ranks[edge["to"]]
    for route in placed.routes:
        xs = [x for x, _ in route.points]
        assert xs == sorted(xs) and xs[0] < xs[-1]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed XML


# ---------------------------------------------------------------- layout


def test_a_diamond_has_no_crossing_and_its_middle_is_one_rank() -> None:
    placed = laid_out(plain([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]))
    assert {n: placed.ranks[f"step:{n}"] for n in "abcd"} == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert crossings(placed) == 0
    y = {n: placed.positions[f"step:{n}"][1] for n in "abcd"}
    assert y["a"] == y["d"] == (y["b"] + y["c"]) / 2  # the join and the fork sit between the branches
    assert_no_overlap(placed)


def test_two_independent_chains_do_not_cross_or_mix() -> None:
    # Interleaved in the input, so that only the ordering keeps each chain on its own line.
    graph = plain([("a1", "a2"), ("b1", "b2"), ("a2", "a3"), ("b2", "b3")], ["a1", "b2", "a3", "b1", "a2", "b3"])
    placed = laid_out(graph)
    assert crossings(placed) == 0
    for chain in ("a", "b"):
        ys = {placed.positions[f"step:{chain}{i}"][1] for i in (1, 2, 3)}
        assert len(ys) == 1, "a chain is drawn as one straight line"
    assert_no_overlap(placed)


def test_the_sales_example_lays_out_without_crossings() -> None:
    graph = sales_graph()
    placed = laid_out(graph)
    assert crossings(placed) == 0
    assert_no_overlap(placed)
    assert_left_to_right(placed, graph["edges"])
    # The storage a late step joins is placed next to that step, not in the first column.
    assert placed.ranks["storage:customers"] == placed.ranks["step:big_customers"] - 1
    assert placed.ranks["storage:sales"] == 0 and placed.ranks["storage:sales_of_big_customers"] == max(
        placed.ranks.values()
    )


def test_the_ordering_removes_the_crossings_of_the_naive_order() -> None:
    graph = plain([("a1", "b3"), ("a2", "b1"), ("a3", "b2")], ["a1", "a2", "a3", "b1", "b2", "b3"])
    placed = laid_out(graph)
    assert crossings(naive(placed, graph)) == 2
    assert crossings(placed) == 0


def test_the_ordering_reduces_crossings_where_some_must_remain() -> None:
    # Over three ranks and with a K(3,3)-like middle, some crossings are unavoidable.
    edges = [(f"a{i}", f"b{(i * 2) % 5}") for i in range(5)] + [(f"b{i}", f"c{(i * 3) % 5}") for i in range(5)]
    edges += [("a0", "b1"), ("a1", "b0"), ("a2", "b4"), ("b3", "c0"), ("b4", "c1")]
    graph = plain(edges, [f"{r}{i}" for r in "abc" for i in range(5)])
    placed = laid_out(graph)
    assert crossings(placed) < crossings(naive(placed, graph))


def test_long_edges_pass_through_dummy_nodes_one_per_rank() -> None:
    graph = plain([("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")])
    placed = laid_out(graph)
    long = next(r for r in placed.routes if (r.source, r.target) == ("step:a", "step:d"))
    assert len(long.dummies) == 2 and all(is_dummy(d) for d in long.dummies)
    assert [placed.ranks[d] for d in long.dummies] == [1, 2]
    assert len(long.points) == 2 + 2 * len(long.dummies)  # across each dummy's column, then into d
    assert long.points[1][1] == long.points[2][1]  # straight across the column it borrows
    assert crossings(placed) == 0
    assert set(placed.nodes) == {f"step:{n}" for n in "abcd"}
    # The dummy holds a slot in its rank: the edge cannot run through b's or c's box.
    for dummy in long.dummies:
        rank = placed.order[placed.ranks[dummy]]
        real = [n for n in rank if not is_dummy(n)]
        for node in real:
            _, top, _, bottom = placed.box(node)
            assert not top <= placed.positions[dummy][1] <= bottom


def random_flow(seed: int, size: int = 50) -> dict[str, Any]:
    """Storages and steps alternating like a real flow: each step reads one to three earlier storages."""
    rng = random.Random(seed)
    nodes = [
        storage(f"s{i}") if i % 2 == 0 else step(f"t{i}", last_status=rng.choice([None, "succeeded", "failed"]))
        for i in range(size)
    ]
    edges = []
    for i, node in enumerate(nodes):
        if i == 0:
            continue
        sources = [j for j in range(i) if nodes[j]["kind"] != node["kind"]] or list(range(i))
        for j in rng.sample(sources, min(len(sources), rng.randint(1, 3))):
            kind = "reads" if node["kind"] == "step" else "writes"
            edges.append({"from": nodes[j]["id"], "to": node["id"], "kind": kind})
    rng.shuffle(nodes)
    return {"flow": "random", "nodes": nodes, "edges": edges}


def test_fifty_random_nodes_render_without_overlapping_boxes() -> None:
    graph = random_flow(14)
    placed = laid_out(graph)
    assert_no_overlap(placed)
    assert_left_to_right(placed, graph["edges"])
    assert crossings(placed) < crossings(naive(placed, graph))
    svg = parse(render_flow_svg(graph))
    assert float(svg.get("width", "0")) == placed.width and float(svg.get("height", "0")) == placed.height
    assert len(svg.findall(f".//{SVG}g[@data-id]")) == 50


def test_the_same_graph_gives_the_same_svg() -> None:
    graph = random_flow(3, 30)
    assert render_flow_svg(graph, "step:t1") == render_flow_svg(graph, "step:t1")


def test_a_cycle_is_drawn_with_one_edge_backwards() -> None:
    placed = laid_out(plain([("a", "b"), ("b", "c"), ("c", "a")]))
    assert sum(r.reversed for r in placed.routes) == 1
    assert len(placed.routes) == 3
    assert_no_overlap(placed)


# ---------------------------------------------------------------- SVG


def test_every_node_and_edge_is_in_the_svg_with_its_data_attributes() -> None:
    last = {"lines": {"status": "succeeded"}, "customer_meta": {"status": "failed"}}
    graph = sales_graph(last)
    svg = parse(render_flow_svg(graph, selected="step:lines"))
    assert svg.tag == f"{SVG}svg" and svg.get("viewBox", "").startswith("0 0 ")
    links = {a.find(f"{SVG}g").get("data-id"): a.get("href") for a in svg.iter(f"{SVG}a")}  # type: ignore[union-attr]
    assert links == {n["id"]: f"?node={quote(n['id'], safe='')}" for n in graph["nodes"]}
    groups = {g.get("data-id"): (g.get("class") or "").split() for g in svg.iter(f"{SVG}g") if g.get("data-id")}
    for node in graph["nodes"]:
        classes = groups[node["id"]]
        assert classes[:2] == ["node", node["kind"]]
        assert f"status-{node.get('last_status') or 'none'}" in classes
        assert ("selected" in classes) == (node["id"] == "step:lines")
    paths = [p for p in svg.iter(f"{SVG}path") if "edge" in (p.get("class") or "").split()]
    drawn = Counter((p.get("data-from"), p.get("data-to"), (p.get("class") or "").split()[1]) for p in paths)
    assert drawn == Counter((e["from"], e["to"], e["kind"]) for e in graph["edges"])
    assert all(p.get("marker-end") == "url(#arrow)" for p in paths)
    assert svg.find(f".//{SVG}marker[@id='arrow']") is not None
    assert svg.find(f"{SVG}style") is not None


def texts_of(svg: ET.Element, node_id: str) -> list[str]:
    group = next(g for g in svg.iter(f"{SVG}g") if g.get("data-id") == node_id)
    return [t.text or "" for t in group.iter(f"{SVG}text")]


def test_steps_show_their_type_and_schedule() -> None:
    assert schedule_text({"cron": "0 * * * *"}) == "cron 0 * * * *"
    assert schedule_text({"every_seconds": 3600.0}) == "every 1h"
    assert schedule_text({"every_seconds": 90}) == "every 90s"
    assert schedule_text({"every": "15m"}) == "every 15m"
    assert schedule_text(None) == "manual"
    graph = {
        "flow": "f",
        "nodes": [
            step("a", schedule={"every_seconds": 3600}),
            step("b", type="python", schedule={"cron": "0 * * * *"}),
            step("c", type="upload"),
            storage("out"),
        ],
        "edges": [{"from": "step:a", "to": "storage:out", "kind": "writes"}],
    }
    svg = parse(render_flow_svg(graph))
    assert texts_of(svg, "step:a") == ["a", "etl · every 1h"]
    assert texts_of(svg, "step:b") == ["b", "python · cron 0 * * * *"]
    assert texts_of(svg, "step:c") == ["c", "upload · manual"]
    assert texts_of(svg, "storage:out") == ["out"]


def test_long_names_are_cut_with_an_ellipsis_and_shown_whole_in_the_tooltip() -> None:
    name = "a_rather_long_storage_name_for_monthly_turnover"
    svg = parse(render_flow_svg({"flow": "f", "nodes": [storage(name)], "edges": []}))
    (text,) = texts_of(svg, f"storage:{name}")
    assert text.endswith("…") and name.startswith(text[:-1]) and len(text) < len(name)
    title = next(g for g in svg.iter(f"{SVG}g") if g.get("data-id")).find(f"{SVG}title")
    assert title is not None and name in (title.text or "")


def test_names_statuses_and_kinds_are_escaped() -> None:
    odd = '<x&"y>'
    graph = {
        "flow": odd,
        "nodes": [step(odd, last_status='"><script>', schedule={"cron": "<b>"}), storage("s")],
        "edges": [{"from": f"step:{odd}", "to": "storage:s", "kind": 'w"x'}],
    }
    raw = render_flow_svg(graph, selected=f"step:{odd}")
    assert odd not in raw and "<script>" not in raw and "<b>" not in raw
    svg = parse(raw)
    assert texts_of(svg, f"step:{odd}")[0] == odd
    assert svg.get("data-flow") == odd
    edge = next(p for p in svg.iter(f"{SVG}path") if p.get("data-from"))
    assert edge.get("data-from") == f"step:{odd}"
    link = next(svg.iter(f"{SVG}a"))
    assert link.get("href") == "?node=" + quote(f"step:{odd}", safe="")
    classes = next(g for g in svg.iter(f"{SVG}g") if g.get("data-id") == f"step:{odd}").get("class", "")
    assert "selected" in classes.split() and all(c.replace("-", "").replace("_", "").isalnum() for c in classes.split())


def test_an_empty_graph_is_still_an_svg() -> None:
    svg = parse(render_flow_svg({"flow": "f", "nodes": [], "edges": []}))
    assert svg.find(f".//{SVG}g[@data-id]") is None


# ---------------------------------------------------------------- any DAG


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 24))
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=40, unique=True)) if pairs else []
    order = draw(st.permutations(range(size)))  # input order unrelated to the edges' direction
    kinds = draw(st.lists(st.sampled_from(["step", "storage"]), min_size=size, max_size=size))
    return {
        "flow": "any",
        "nodes": [{"id": f"n{i}", "kind": kinds[i], "name": f"n{i}"} for i in order],
        "edges": [{"from": f"n{i}", "to": f"n{j}", "kind": "needs"} for i, j in chosen],
    }


@settings(max_examples=80, deadline=None)
@given(dags())
def test_any_dag_is_drawn_left_to_right_without_overlap(graph: dict[str, Any]) -> None:
    placed = laid_out(graph)
    assert_left_to_right(placed, graph["edges"])
    assert_no_overlap(placed)
    assert crossings(placed) <= crossings(naive(placed, graph))
    svg = parse(render_flow_svg(graph))
    assert {g.get("data-id") for g in svg.iter(f"{SVG}g") if g.get("data-id")} == {n["id"] for n in graph["nodes"]}
    assert len([p for p in svg.iter(f"{SVG}path") if p.get("data-from")]) == len(graph["edges"])


def test_a_node_listed_twice_is_drawn_once_and_edges_to_unknown_nodes_are_left_out() -> None:
    graph = {
        "flow": "f",
        "nodes": [step("a"), step("b"), step("a", type="python")],
        "edges": [
            {"from": "step:a", "to": "step:b", "kind": "needs"},
            {"from": "step:a", "to": "step:gone", "kind": "needs"},
        ],
    }
    svg = parse(render_flow_svg(graph))
    assert [g.get("data-id") for g in svg.iter(f"{SVG}g") if g.get("data-id")] == ["step:a", "step:b"]
    assert texts_of(svg, "step:a")[1].startswith("etl")
    assert [(p.get("data-from"), p.get("data-to")) for p in svg.iter(f"{SVG}path") if p.get("data-from")] == [
        ("step:a", "step:b")
    ]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)))))
def test_any_graph_even_with_cycles_is_drawn_whole(pairs: list[tuple[int, int]]) -> None:
    names = sorted({f"n{i}" for pair in pairs for i in pair}) or ["n0"]
    graph = plain([(f"n{a}", f"n{b}") for a, b in pairs], names)
    placed = laid_out(graph)
    assert_no_overlap(placed)
    assert len(placed.routes) == len(pairs)
    svg = parse(render_flow_svg(graph))
    assert len([p for p in svg.iter(f"{SVG}path") if p.get("data-from")]) == len(pairs)
