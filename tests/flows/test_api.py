"""Flows over HTTP on a running platform: a python step and an upload step on real SFTP, FTP and FTPS servers,
apply-time validation errors naming the step and the field, runs answered 202, the graph with column lineage."""

from __future__ import annotations

import csv
import io
import uuid

import asyncpg

from tests.conftest import RunningPlatform
from tests.eventually import eventually
from tests.file_servers import FileServer
from tests.flows.conftest import api, load_rows

SCRIPT = """
import os
import pandas as pd
from headrace.client import Client, HeadraceError

with Client(os.environ["HEADRACE_URL"], admin_token=os.environ["HEADRACE_ADMIN_TOKEN"]) as client:
    try:
        client.create_storage("{out}", load_mode="replace")
    except HeadraceError as exc:
        if exc.status != 409:
            raise
    sales = client.storage("{source}").query()
    scored = sales.assign(score=sales["n"] * 10)
    client.storage("{out}").load_dataframe(scored[["k", "score"]], mode="replace")
    print("scored", len(scored), "rows")
"""


async def test_a_python_step_then_an_upload_to_a_file_server(
    platform: RunningPlatform, pool: asyncpg.Pool, file_server: FileServer
) -> None:
    """The upload step on SFTP, FTP and FTPS alike: under a temporary name, renamed; credentials shown masked."""
    tag = uuid.uuid4().hex[:8]
    source, out, flow = f"src_{tag}", f"scored_{tag}", f"py_{tag}"
    await load_rows(pool, source, [{"k": i, "n": i * i} for i in range(5)])
    folder = file_server.root / f"up_{tag}"
    folder.mkdir()
    definition = {
        "name": flow,
        "steps": [
            {
                "name": "score",
                "type": "python",
                "code": SCRIPT.format(out=out, source=source),
                "reads": [source],
                "writes": [out],
                "timeout_seconds": 120,
            },
            {
                "name": "ship",
                "type": "upload",
                "storage": out,
                "columns": ["k", "score"],
                "filter": "score >= 10",
                "format": "csv",
                "destination": file_server.fields()
                | {"path": f"{file_server.remote(folder)}/scores_{{date}}_{{run_id}}.csv"},
            },
        ],
    }
    status, applied = await api(platform, "POST", "/api/flows", json=definition)
    assert status == 201, applied
    shown = applied["definition"]["steps"][1]["destination"]
    assert shown["private_key" if file_server.kind == "sftp" else "password"] == "***" and shown["host"]
    assert file_server.secret not in str(applied)
    assert applied["warnings"] and "checked when it runs" in applied["warnings"][0]["message"]

    status, started = await api(platform, "POST", f"/api/flows/{flow}/runs")
    assert status == 202
    run_path = f"/api/flows/{flow}/runs/{started['id']}"

    async def finished() -> dict:
        _, run = await api(platform, "GET", run_path)
        return run if run["status"] != "running" else {}

    run = await eventually(finished, timeout=120, what="the run")
    steps = {s["step"]: s for s in run["steps"]}
    assert run["status"] == "succeeded", run
    assert "scored 5 rows" in steps["score"]["output"]
    files = list(folder.iterdir())
    assert [f.name for f in files] == [f"scores_{run['started_at'][:10]}_{run['id']}.csv"]  # no .part left
    rows = list(csv.reader(io.StringIO(files[0].read_text())))
    assert rows[0] == ["k", "score"] and sorted(rows[1:]) == [["1", "10"], ["2", "40"], ["3", "90"], ["4", "160"]]
    assert steps["ship"]["rows_written"] == 4

    status, runs = await api(platform, "GET", f"/api/flows/{flow}/runs")
    assert status == 200 and runs[0]["id"] == run["id"] and runs[0]["duration_seconds"] > 0


async def test_a_failing_script_fails_its_step_with_its_output(platform: RunningPlatform) -> None:
    flow = f"bad_{uuid.uuid4().hex[:8]}"
    definition = {"name": flow, "steps": [{"name": "boom", "type": "python", "code": "print('before')\n1 / 0\n"}]}
    assert (await api(platform, "POST", "/api/flows", json=definition))[0] == 201
    status, run = await api(platform, "POST", f"/api/flows/{flow}/runs?wait=1")
    step = run["steps"][0]
    assert status == 200 and run["status"] == "failed"
    assert step["attempt"] == 1 and "exited with status 1" in step["error"] and "ZeroDivisionError" in step["output"]


async def test_apply_refuses_what_cannot_run_naming_the_step_and_the_field(
    platform: RunningPlatform, pool: asyncpg.Pool
) -> None:
    tag = uuid.uuid4().hex[:8]
    source = f"src_{tag}"
    await load_rows(pool, source, [{"k": 1, "label": "a"}])

    async def refused(steps: list[dict]) -> list[dict]:
        status, body = await api(platform, "POST", "/api/flows", json={"name": f"v_{tag}", "steps": steps})
        assert status == 422, body
        return body["errors"]

    out = f"out_{tag}"
    assert (await refused([{"name": "a", "input": f"nope_{tag}", "output": out}]))[0]["path"] == ["steps", "a", "input"]
    errors = await refused([{"name": "a", "input": source, "stages": [{"select": ["k", "ghost"]}], "output": out}])
    assert errors[0]["path"] == ["steps", "a", "stages", 0, "select"] and "ghost" in errors[0]["message"]
    errors = await refused([{"name": "a", "input": source, "stages": [{"filter": "label + 1 > 2"}], "output": out}])
    assert errors[0]["path"] == ["steps", "a", "stages", 0, "filter"]
    errors = await refused(
        [
            {"name": "a", "input": source, "output": f"x_{tag}", "needs": ["b"]},
            {"name": "b", "input": source, "output": f"y_{tag}", "needs": ["a"]},
        ]
    )
    assert "cycle" in errors[0]["message"]
    errors = await refused([{"name": "a", "input": source, "output": {"storage": out, "mode": "merge"}}])
    assert errors[0]["path"] == ["steps", "a", "output"] and "primary_key" in errors[0]["message"]
    errors = await refused(
        [{"name": "a", "input": source, "stages": [{"filter": "k >", "compute": {}}], "output": out}]
    )
    assert errors[0]["path"][:4] == ["steps", "a", "stages", 0]
    status, body = await api(
        platform, "POST", "/api/flows", data="name: [", headers={"Content-Type": "application/yaml"}
    )
    assert status == 422 and body["errors"][0]["path"] == ["body"]
    assert (await api(platform, "GET", f"/api/flows/v_{tag}"))[0] == 404


async def test_the_graph_has_storages_steps_and_column_lineage(platform: RunningPlatform, pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:8]
    source, out, flow = f"src_{tag}", f"out_{tag}", f"g_{tag}"
    await load_rows(pool, source, [{"price": 2.0, "qty": 3, "who": "a"}])
    step = {
        "name": "totals",
        "input": source,
        "stages": [
            {"compute": {"amount": "price * qty"}},
            {"aggregate": {"group_by": ["who"], "measures": {"turnover": {"sum": "amount"}}}},
        ],
        "output": out,
    }
    definition = {"name": flow, "schedule": {"cron": "0 3 * * *"}, "steps": [step]}
    assert (await api(platform, "POST", "/api/flows", json=definition))[0] == 201
    status, graph = await api(platform, "GET", f"/api/flows/{flow}/graph")
    assert status == 200
    assert {n["id"] for n in graph["nodes"]} == {f"storage:{source}", f"storage:{out}", "step:totals"}
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {
        (f"storage:{source}", "step:totals"),
        ("step:totals", f"storage:{out}"),
    }
    step_node = next(n for n in graph["nodes"] if n["id"] == "step:totals")
    assert step_node["schedule"] == {"cron": "0 3 * * *"} and step_node["last_status"] is None
    lineage = {c["column"]: c["from"] for c in graph["columns"][0]["columns"]}
    assert lineage == {"who": [f"{source}.who"], "turnover": [f"{source}.price", f"{source}.qty"]}
    status, _ = await api(platform, "DELETE", f"/api/flows/{flow}")
    assert status == 200 and (await api(platform, "GET", f"/api/flows/{flow}/graph"))[0] == 404
