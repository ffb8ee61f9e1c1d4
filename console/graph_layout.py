"""Layered (Sugiyama) layout of a flow graph, left to right: ranks, dummy nodes, crossing reduction, coordinates."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

Point = tuple[float, float]
Size = tuple[float, float]
Pair = tuple[str, str]

NODE_SIZES: dict[str, Size] = {"storage": (184.0, 40.0), "step": (184.0, 50.0)}
RANK_GAP = 84.0  # room between two columns for the edges' curves and arrow heads
NODE_GAP = 20.0  # between two boxes of a column
DUMMY_GAP = 12.0  # between a box and an edge passing through its column, or two such edges
MARGIN = 16.0
PORT_SPACING = 6.0  # between two edges leaving or entering one side of a box
SWEEPS = 24
PLACEMENT_ROUNDS = 16
DUMMY = "\x00dummy"  # no node id of the flows API starts with a NUL
# Straight long edges matter most, then edges touching a long edge (Gansner et al.'s Ω weights).
WEIGHTS = {(True, True): 8.0, (True, False): 2.0, (False, True): 2.0, (False, False): 1.0}


@dataclass(frozen=True)
class Route:
    """One edge of the input, as points from its source's box to its target's box through its dummy nodes."""

    source: str
    target: str
    kind: str
    points: tuple[Point, ...]
    dummies: tuple[str, ...]
    reversed: bool  # it closed a cycle, so it was laid out backwards and runs right to left


@dataclass
class Layout:
    positions: dict[str, Point]  # the centre of every node, dummies included
    sizes: dict[str, Size]
    ranks: dict[str, int]
    order: list[list[str]]  # each rank's nodes top to bottom, dummies included
    links: list[Pair]  # the layered graph's edges, each from rank r to rank r + 1
    routes: list[Route]
    width: float
    height: float

    @property
    def nodes(self) -> list[str]:
        return [n for n in self.positions if not is_dummy(n)]

    def box(self, node: str) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of a node's box."""
        (x, y), (w, h) = self.positions[node], self.sizes[node]
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def is_dummy(node: str) -> bool:
    return node.startswith(DUMMY)


def default_size(node: Mapping[str, Any]) -> Size:
    return NODE_SIZES.get(str(node.get("kind")), NODE_SIZES["step"])


def layout(
    nodes: Sequence[Mapping[str, Any]],
    edges: Sequence[Mapping[str, Any]],
    size: Callable[[Mapping[str, Any]], Size] = default_size,
) -> Layout:
    """Nodes ({"id", "kind", …}) and edges ({"from", "to", "kind"}) as the flows API's graph route gives them;
    edges naming an unknown node are left out. The same input always gives the same layout."""
    sizes = {str(n["id"]): size(n) for n in nodes}
    ids = list(sizes)
    given = [(str(e["from"]), str(e["to"]), str(e.get("kind", ""))) for e in edges]
    given = [e for e in given if e[0] in sizes and e[1] in sizes]
    pairs = list(dict.fromkeys((s, t) for s, t, _ in given if s != t))
    forward, flipped = _acyclic(ids, pairs)
    ranks = _rank(ids, forward)
    chains, links = _split(forward, ranks, sizes)
    order = min((_order(start, links) for start in _initial_orders(ids, links, ranks)), key=lambda o: _count(o, links))
    positions, width, height = _place(order, links, sizes)
    ports = _ports(chains, positions, sizes)
    routes = []
    for source, target, kind in given:
        if source == target:
            routes.append(Route(source, target, kind, _loop(positions[source], sizes[source]), (), False))
            continue
        backwards = (source, target) in flipped
        chain = chains[(target, source) if backwards else (source, target)]
        points = _points(chain, positions, sizes, ports[chain[0], chain[-1]])
        routes.append(Route(source, target, kind, points[::-1] if backwards else points, tuple(chain[1:-1]), backwards))
    return Layout(positions, sizes, ranks, order, links, routes, width, height)


def crossings(layout: Layout) -> int:
    """How many pairs of edges cross between adjacent ranks (the count the ordering minimises)."""
    return _count(layout.order, layout.links)


# ---------------------------------------------------------------- ranks and dummy nodes


def _acyclic(ids: list[str], pairs: list[Pair]) -> tuple[list[Pair], set[Pair]]:
    """The edges with those closing a cycle reversed (a depth-first search's back edges), and the reversed ones."""
    out: dict[str, list[str]] = {n: [] for n in ids}
    for s, t in pairs:
        out[s].append(t)
    state: dict[str, int] = {}  # 1: on the search's path, 2: done
    back: set[Pair] = set()
    for root in ids:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out[child])))
    forward = list(dict.fromkeys((t, s) if (s, t) in back else (s, t) for s, t in pairs))
    return forward, back


def _rank(ids: list[str], pairs: list[Pair]) -> dict[str, int]:
    """Longest path from the sources; then each source moves right next to its nearest successor, so that an
    input read late in the flow (a join's other storage) does not stretch its edge across the whole drawing."""
    preds: dict[str, list[str]] = {n: [] for n in ids}
    succs: dict[str, list[str]] = {n: [] for n in ids}
    for s, t in pairs:
        preds[t].append(s)
        succs[s].append(t)
    waiting = {n: len(preds[n]) for n in ids}
    ready = [n for n in ids if not waiting[n]]
    ranks: dict[str, int] = {}
    while ready:
        node = ready.pop(0)
        ranks[node] = max((ranks[p] + 1 for p in preds[node]), default=0)
        for child in succs[node]:
            waiting[child] -= 1
            if not waiting[child]:
                ready.append(child)
    for node in ids:
        if not preds[node] and succs[node]:
            ranks[node] = min(ranks[c] for c in succs[node]) - 1
    return ranks


def _split(
    pairs: list[Pair], ranks: dict[str, int], sizes: dict[str, Size]
) -> tuple[dict[Pair, list[str]], list[Pair]]:
    """Each edge's chain of nodes, one per rank (dummies between its ends), and the links of all chains."""
    chains: dict[Pair, list[str]] = {}
    links: list[Pair] = []
    for index, (s, t) in enumerate(pairs):
        chain = [s]
        for rank in range(ranks[s] + 1, ranks[t]):
            dummy = f"{DUMMY}:{index}:{rank}"
            ranks[dummy], sizes[dummy] = rank, (0.0, 0.0)
            chain.append(dummy)
        chain.append(t)
        chains[(s, t)] = chain
        links += pairwise(chain)
    return chains, links


# ---------------------------------------------------------------- ordering within ranks


def _initial_orders(ids: list[str], links: list[Pair], ranks: dict[str, int]) -> list[list[list[str]]]:
    """Two starts for the sweeps: ranks filled depth first from the sources (the nodes of one branch start next to
    each other), and the input's order (the one the caller chose, which the result then never does worse than)."""
    preds, succs = _neighbours(links)
    order: list[list[str]] = [[] for _ in range(max(ranks.values(), default=-1) + 1)]
    seen: set[str] = set()
    for root in [n for n in ids if n not in preds] + ids:
        stack = [root]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            order[ranks[node]].append(node)
            stack += reversed(succs.get(node, []))
    given: list[list[str]] = [[] for _ in order]
    for node in ids + [n for n in ranks if is_dummy(n)]:
        given[ranks[node]].append(node)
    return [order, given]


def _neighbours(links: list[Pair]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    preds: dict[str, list[str]] = {}
    succs: dict[str, list[str]] = {}
    for s, t in links:
        succs.setdefault(s, []).append(t)
        preds.setdefault(t, []).append(s)
    return preds, succs


def _median(values: list[float]) -> float:
    """Gansner et al.'s weighted median: with an even count, leans to the side where the neighbours are closer."""
    values = sorted(values)
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    left, right = values[mid - 1] - values[0], values[-1] - values[mid]
    if left + right == 0:
        return (values[mid - 1] + values[mid]) / 2
    return (values[mid - 1] * right + values[mid] * left) / (left + right)


def _reorder(rank: list[str], others: dict[str, list[str]], index: dict[str, int]) -> list[str]:
    """Sort a rank by the median (then the mean) of its neighbours' places in the adjacent rank; a node without
    neighbours there keeps its slot."""
    keyed = []
    for place, node in enumerate(rank):
        near = [float(index[n]) for n in others.get(node, [])]
        if near:
            keyed.append((_median(near), sum(near) / len(near), place, node))
    sorted_nodes = iter(node for *_, node in sorted(keyed))
    moving = {node for *_, node in keyed}
    return [next(sorted_nodes) if node in moving else node for node in rank]


def _between(upper: list[str], lower: list[str], links: Sequence[Pair]) -> int:
    top = {n: i for i, n in enumerate(upper)}
    bottom = {n: i for i, n in enumerate(lower)}
    ends = sorted((top[s], bottom[t]) for s, t in links if s in top and t in bottom)
    return sum(1 for i, (a, b) in enumerate(ends) for c, d in ends[i + 1 :] if c > a and d < b)


def _count(order: list[list[str]], links: list[Pair]) -> int:
    rank_of = {n: r for r, rank in enumerate(order) for n in rank}
    by_rank: dict[int, list[Pair]] = {}
    for s, t in links:
        by_rank.setdefault(rank_of[s], []).append((s, t))
    return sum(_between(order[r], order[r + 1], by_rank.get(r, [])) for r in range(len(order) - 1))


def _transpose(order: list[list[str]], preds: dict[str, list[str]], succs: dict[str, list[str]]) -> None:
    """Swap adjacent nodes of a rank while a swap removes crossings with either neighbouring rank. A pass revisits
    only the ranks next to one that changed: the others' swaps were weighed against the same neighbours already."""
    index = {n: i for rank in order for i, n in enumerate(rank)}

    def gain(v: str, w: str) -> int:
        # Crossings of v's and w's edges with v above w, less those with w above v.
        total = 0
        for side in (preds, succs):
            theirs = [index[b] for b in side.get(w, ())]
            for a in side.get(v, ()):
                at = index[a]
                total += sum(1 if at > b else -1 if at < b else 0 for b in theirs)
        return total

    dirty = set(range(len(order)))
    for _ in range(2 * len(order) + 4):
        changed: set[int] = set()
        for r in sorted(dirty):
            rank = order[r]
            for i in range(len(rank) - 1):
                v, w = rank[i], rank[i + 1]
                if gain(v, w) > 0:
                    rank[i], rank[i + 1] = w, v
                    index[v], index[w] = i + 1, i
                    changed.add(r)
        if not changed:
            return
        dirty = {n for r in changed for n in (r - 1, r, r + 1) if 0 <= n < len(order)}


def _order(order: list[list[str]], links: list[Pair]) -> list[list[str]]:
    """Alternate down and up median sweeps, each followed by transposition; keep the best order met."""
    preds, succs = _neighbours(links)
    _transpose(order, preds, succs)
    best, fewest = [list(rank) for rank in order], _count(order, links)
    for sweep in range(SWEEPS):
        if fewest == 0:
            break
        down = sweep % 2 == 0
        for r in range(1, len(order)) if down else range(len(order) - 2, -1, -1):
            index = {n: i for i, n in enumerate(order[r - 1 if down else r + 1])}
            order[r] = _reorder(order[r], preds if down else succs, index)
        _transpose(order, preds, succs)
        found = _count(order, links)
        if found < fewest:
            best, fewest = [list(rank) for rank in order], found
    return best


# ---------------------------------------------------------------- coordinates


def _fit(desired: list[float], weights: list[float], gaps: list[float]) -> list[float]:
    """Places closest to the desired ones (least weighted squares) keeping the order and each gap: with the gaps
    taken out this is an isotonic regression, solved exactly by pooling adjacent violators."""
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for d, w, o in zip(desired, weights, offsets, strict=True):
        blocks.append([(d - o) * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            total, weight, count = blocks.pop()
            blocks[-1] = [blocks[-1][0] + total, blocks[-1][1] + weight, blocks[-1][2] + count]
    places: list[float] = []
    for total, weight, count in blocks:
        places += [total / weight] * int(count)
    return [p + o for p, o in zip(places, offsets, strict=True)]


def _gap(a: str, b: str, sizes: dict[str, Size]) -> float:
    between = DUMMY_GAP if is_dummy(a) or is_dummy(b) else NODE_GAP
    return (sizes[a][1] + sizes[b][1]) / 2 + between


def _place(order: list[list[str]], links: list[Pair], sizes: dict[str, Size]) -> tuple[dict[str, Point], float, float]:
    """Vertical places by sweeps that pull each node to the weighted mean of its neighbours and then fit the rank
    to those wishes at minimum spacing; columns at a fixed pitch. Returns centres (to a tenth of a pixel, as the
    SVG writes them), width and height."""
    preds, succs = _neighbours(links)
    gaps = [[_gap(a, b, sizes) for a, b in pairwise(rank)] for rank in order]
    y: dict[str, float] = {}
    for rank, rank_gaps in zip(order, gaps, strict=True):
        y.update(zip(rank, _fit([0.0] * len(rank), [1.0] * len(rank), rank_gaps), strict=True))

    def refit(r: int, sides: tuple[dict[str, list[str]], ...]) -> None:
        desired, weights = [], []
        for node in order[r]:
            pulls = [(y[n], WEIGHTS[is_dummy(node), is_dummy(n)]) for side in sides for n in side.get(node, [])]
            weight = sum(w for _, w in pulls)
            desired.append(sum(p * w for p, w in pulls) / weight if pulls else y[node])
            weights.append(weight or 0.5)
        y.update(zip(order[r], _fit(desired, weights, gaps[r]), strict=True))

    for _ in range(PLACEMENT_ROUNDS):
        for r in range(1, len(order)):
            refit(r, (preds,))
        for r in range(len(order) - 2, -1, -1):
            refit(r, (succs,))
    for r in range(len(order)):
        refit(r, (preds, succs))
    column = max((w for w, _ in sizes.values()), default=0.0)
    top = min((y[n] - sizes[n][1] / 2 for n in y), default=0.0)
    bottom = max((y[n] + sizes[n][1] / 2 for n in y), default=0.0)
    positions = {
        n: (MARGIN + r * (column + RANK_GAP) + column / 2, round(y[n] - top + MARGIN, 1))
        for r, rank in enumerate(order)
        for n in rank
    }
    width = 2 * MARGIN + len(order) * column + max(len(order) - 1, 0) * RANK_GAP
    return positions, width, float(math.ceil(bottom - top + 2 * MARGIN))


def _ports(
    chains: dict[Pair, list[str]], positions: dict[str, Point], sizes: dict[str, Size]
) -> dict[Pair, list[float]]:
    """Where each edge leaves its source's box and enters its target's, as offsets from the side's middle: a box's
    edges spread over its side in the order of where they go, so that arrow heads do not pile up on one point."""
    leaving: dict[str, list[tuple[float, Pair]]] = {}
    entering: dict[str, list[tuple[float, Pair]]] = {}
    for pair, chain in chains.items():
        leaving.setdefault(chain[0], []).append((positions[chain[1]][1], pair))
        entering.setdefault(chain[-1], []).append((positions[chain[-2]][1], pair))
    ports: dict[Pair, list[float]] = {pair: [0.0, 0.0] for pair in chains}
    for side, ends in ((0, leaving), (1, entering)):
        for node, found in ends.items():
            found.sort()
            spread = min(PORT_SPACING, sizes[node][1] * 0.6 / max(len(found) - 1, 1))
            for i, (_, pair) in enumerate(found):
                ports[pair][side] = (i - (len(found) - 1) / 2) * spread
    return ports


def _points(
    chain: list[str], positions: dict[str, Point], sizes: dict[str, Size], ports: list[float]
) -> tuple[Point, ...]:
    """From the right side of the chain's first box, across each dummy's column, to the left side of its last."""
    column = max(w for w, _ in sizes.values())
    (x0, y0), (x1, y1) = positions[chain[0]], positions[chain[-1]]
    points = [(x0 + sizes[chain[0]][0] / 2, y0 + ports[0])]
    for dummy in chain[1:-1]:
        x, y = positions[dummy]
        points += [(x - column / 2, y), (x + column / 2, y)]
    points.append((x1 - sizes[chain[-1]][0] / 2, y1 + ports[1]))
    return tuple(points)


def _loop(centre: Point, size: Size) -> tuple[Point, ...]:
    (x, y), (w, h) = centre, size
    return ((x + w / 2, y), (x + w / 2 + 12, y - h / 2 - 10), (x - w / 2 - 12, y - h / 2 - 10), (x - w / 2, y))
