"""examples/sales: `make example`'s two commands on a running platform, then `headrace flow run sales` succeeds."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.conftest import REPO, RunningPlatform


def test_the_sales_example_loads_applies_and_runs(platform: RunningPlatform) -> None:
    loaded = subprocess.run(
        [sys.executable, "examples/sales/load.py"],
        env=platform.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "sales: 600 rows" in loaded.stdout
    applied = platform.cli("flow", "apply", "examples/sales/flow.yaml")
    assert "flow sales applied (5 steps)" in applied.stdout
    run = orjson.loads(platform.cli("flow", "run", "sales", "--json").stdout)
    assert run["status"] == "succeeded", run
    assert {s["step"]: s["status"] for s in run["steps"]} == dict.fromkeys(
        ["lines", "customer_meta", "big_customers", "turnover_by_shop", "active_clients"], "succeeded"
    )
    months = orjson.loads(platform.cli("storage", "query", "active_clients_by_month", "--json").stdout)
    assert len(months) == 12
    assert "succeeded" in platform.cli("flow", "runs", "sales").stdout
    plan = orjson.loads(platform.cli("flow", "plan", "sales", "--json").stdout)
    assert plan["steps"][0]["step"] == "lines" and plan["steps"][0]["estimated_rows"] > 0
