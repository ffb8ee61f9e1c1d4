"""`headrace flow …`: thin HTTP clients of the transform service's /api/flows routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from headrace.cli import cli
from headrace.cli.common import call, print_json


def _call(ctx: click.Context, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the transform service's flow API (a run asked to wait answers when it ends)."""
    return call(ctx, method, path, service="transform", **kwargs)


def _flow_path(name: str, *rest: str) -> str:
    return "/".join([f"/api/flows/{quote(name, safe='')}", *rest])


def _summary(run: dict[str, Any]) -> str:
    lines = [f"run {run['id']}: {run['status']} ({run.get('duration_seconds') or 0:.1f} s)"]
    for step in run.get("steps", []):
        rows = f"{step['rows_read'] or 0} read, {step['rows_written'] or 0} written"
        error = f" — {step['error']}" if step.get("error") and step["status"] == "failed" else ""
        lines.append(f"  {step['step']:<24} attempt {step['attempt']}  {step['status']:<16} {rows}{error}")
    if run.get("error"):
        lines.append(run["error"])
    return "\n".join(lines)


@cli.group()
def flow() -> None:
    """Dataflows: apply definitions, run them, see their runs, plans and graphs."""


@flow.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_apply(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Create or replace a flow from a YAML or JSON file, checked against the catalog first."""
    kind = "application/json" if file.suffix.lower() == ".json" else "application/yaml"
    stored = _call(ctx, "POST", "/api/flows", content=file.read_bytes(), headers={"Content-Type": kind})
    if as_json:
        print_json(stored)
        return
    click.echo(f"flow {stored['name']} applied ({len(stored['definition']['steps'])} steps)")
    for warning in stored.get("warnings", []):
        click.echo(f"note: {warning['field']}: {warning['message']}")


@flow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_list(ctx: click.Context, as_json: bool) -> None:
    flows = _call(ctx, "GET", "/api/flows")
    if as_json:
        print_json(flows)
        return
    for found in flows:
        schedule = found["definition"].get("schedule") or {}
        click.echo(f"{found['name']:<32} {len(found['definition']['steps'])} steps  {schedule or 'on request'}")


@flow.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_show(ctx: click.Context, name: str, as_json: bool) -> None:
    found = _call(ctx, "GET", _flow_path(name))
    print_json(found if as_json else found["definition"])


@flow.command("delete")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete a flow and its run history (the storages it wrote stay)."""
    result = _call(ctx, "DELETE", _flow_path(name))
    print_json(result) if as_json else click.echo(f"flow {name} deleted")


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--param")
        found.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in found.items()}


@flow.command("run")
@click.argument("name")
@click.option("--param", "pairs", multiple=True, help="K=V: run a parametric step for this value (repeat for more)")
@click.option("--rerun-of", help="Rerun from the failure of this run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_run(ctx: click.Context, name: str, pairs: tuple[str, ...], rerun_of: str | None, as_json: bool) -> None:
    """Run a flow now, wait for it and print the run; exits 1 when it fails."""
    body: dict[str, Any] = {"params": _params(pairs)}
    if rerun_of:
        body["rerun_of"] = rerun_of
    run = _call(ctx, "POST", _flow_path(name, "runs") + "?wait=true", json=body)
    print_json(run) if as_json else click.echo(_summary(run))
    if run["status"] != "succeeded":
        ctx.exit(1)


@flow.command("runs")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_runs(ctx: click.Context, name: str, as_json: bool) -> None:
    runs = _call(ctx, "GET", _flow_path(name, "runs"))
    if as_json:
        print_json(runs)
        return
    for run in runs:
        took = f"{run['duration_seconds']:.1f} s" if run["duration_seconds"] is not None else "running"
        click.echo(f"{run['id']}  {run['started_at']}  {run['trigger']:<8} {run['status']:<10} {took}")


@flow.command("plan")
@click.argument("name")
@click.option("--param", "pairs", multiple=True, help="K=V: plan a parametric step for this value")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def flow_plan(ctx: click.Context, name: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """A dry run: each step's SQL and parameters, estimated rows, model change and a 20-row preview."""
    plan = _call(ctx, "POST", _flow_path(name, "plan"), json={"params": _params(pairs)})
    if as_json:
        print_json(plan)
        return
    for step in plan["steps"]:
        click.echo(f"== {step['step']} ({step['type']})  estimated rows: {step.get('estimated_rows', '?')}")
        for key in ("note", "error", "sql", "model_change", "target"):
            if step.get(key):
                click.echo(f"{key}: {step[key]}")


@flow.command("graph")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only form)")
@click.pass_context
def flow_graph(ctx: click.Context, name: str, as_json: bool) -> None:
    """Nodes, edges and column lineage."""
    print_json(_call(ctx, "GET", _flow_path(name, "graph")))
