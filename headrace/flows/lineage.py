"""A flow as a graph: storages and steps as nodes, reads and writes as edges, and column lineage from formulas."""

from __future__ import annotations

from typing import Any

from headrace.flows.definitions import EtlStep, Flow
from headrace.flows.graph import reads_of, writes_of
from headrace.flows.validate import Checked


def flow_graph(flow: Flow, checked: Checked, last: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Nodes (`storage:<name>`, `step:<name>` with its type, schedule and last status), edges (a step reads or
    writes a storage; a step needs another), and for each ETL step the input fields every output field comes from."""
    schedule = flow.schedule.model_dump(exclude_none=True) if flow.schedule else None
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []
    for step in flow.steps:
        for storage in [*reads_of(step), *writes_of(step)]:
            nodes.setdefault(f"storage:{storage}", {"id": f"storage:{storage}", "kind": "storage", "name": storage})
    for step in flow.steps:
        state = last.get(step.name, {})
        nodes[f"step:{step.name}"] = {
            "id": f"step:{step.name}",
            "kind": "step",
            "name": step.name,
            "type": step.type,
            "schedule": schedule,
            "last_status": state.get("status"),
            "last_run_id": state.get("run_id"),
            "last_finished_at": state.get("finished_at"),
        }
        edges += [{"from": f"storage:{s}", "to": f"step:{step.name}", "kind": "reads"} for s in reads_of(step)]
        edges += [{"from": f"step:{step.name}", "to": f"storage:{s}", "kind": "writes"} for s in writes_of(step)]
        edges += [{"from": f"step:{n}", "to": f"step:{step.name}", "kind": "needs"} for n in step.needs]
    columns = []
    for step in flow.steps:
        compiled = checked.outputs.get(step.name)
        if not isinstance(step, EtlStep) or compiled is None:
            continue
        lineage = []
        if compiled.param_column is not None:
            name = compiled.param_column[0]
            lineage.append({"column": name, "from": [f"@{step.param[0] if step.param else name}"]})
        for key in compiled.final.columns:
            lineage.append({"column": key, "from": sorted(compiled.lineage.of([key]))})
        columns.append({"step": step.name, "output": step.output.storage, "columns": lineage})
    return {"flow": flow.name, "nodes": list(nodes.values()), "edges": edges, "columns": columns}
