"""The alert rules and the Grafana dashboard of infra/: valid for Prometheus' own checker, their alerts firing on
synthetic series (alerts_test.yml), and every metric they name served by a running platform.

promtool comes from Debian's `prometheus` package (.ci/run installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from headrace.settings import SERVICES
from tests.conftest import REPO, RunningPlatform

PROMETHEUS = REPO / "infra" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
DASHBOARD = REPO / "infra" / "grafana" / "headrace.json"

# Series Prometheus makes itself for each target, not served on /metrics.
SYNTHETIC = frozenset({"up"})
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or"})
KEYWORDS |= {"unless"}
# Grafana's variables, replaced by what a query would carry so that promtool can parse the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$storage": ".*", "$export": ".*", "$flow": ".*"}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions (followed by "("),
    keywords, label names (inside {} or a by/on/… list), strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        name, call = match.groups()
        if call is None and name not in KEYWORDS:
            names.add(name)
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return document


def dashboard_queries() -> list[str]:
    """Each panel query, its Grafana variables replaced by values a query would carry."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"a Grafana variable the test does not know: {target['expr']}"
            queries.append(expr)
    return queries


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'sum by (storage, reason) (increase(a_total{storage=~"x|y", le="0.5"}[10m]) > 0 or (b unless b offset 10m))'
        " > 2 * max on (export) group_left (flow) (c:rate5m) and histogram_quantile(0.9, d_bucket[5m]) > bool 1e3"
    )
    assert metric_names(expr) == {"a_total", "b", "c:rate5m", "d_bucket"}


def test_the_rules_and_the_example_config_pass_promtool_checks(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The config names alerts.yml relative to itself; promtool checks it too, offline.
    config = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_alerts_fire_on_synthetic_series(promtool: str) -> None:
    # Lag growing, an export or a flow failing (a first failure too) and overdue, a dead letter, a restart, and
    # what must not alert (steady lag, old failures, a Prometheus that just started): alerts_test.yml.
    tested = run(promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_dashboard_queries_are_valid_promql_on_its_datasource_variable(promtool: str, tmp_path: Path) -> None:
    document = dashboard()
    assert document["schemaVersion"] >= 39
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
    # promtool parses PromQL only in rule files: each query as a recording rule.
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(dashboard_queries())]
    check = tmp_path / "dashboard_rules.yml"
    check.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool, "check", "rules", str(check))
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_every_metric_the_rules_and_the_dashboard_name_is_served(platform: RunningPlatform) -> None:
    used = {name for expr in rule_expressions() for name in metric_names(expr)}
    used |= {name for expr in dashboard_queries() for name in metric_names(expr)}
    # The parser found what the rules are about (a parser that finds nothing would pass the check below).
    assert {
        "headrace_transform_consumer_lag",
        "headrace_export_schedule_interval_seconds",
        "headrace_flow_last_success_timestamp_seconds",
        "process_start_time_seconds",
        "headrace_ingest_events_accepted_total",
        "headrace_flow_step_duration_seconds_bucket",
    } <= used
    served: set[str] = set()
    families: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for service in SERVICES:
            # /metrics needs no token, as for a Prometheus server scraping it.
            async with session.get(f"{platform.settings.service_url(service)}/metrics") as response:
                assert response.status == 200, service
                text = await response.text()
            for line in text.splitlines():
                # A labelled family shows its HELP and TYPE from the start, its samples only once it has some.
                if line.startswith("# TYPE "):
                    _, _, name, kind = line.split()
                    families[name] = kind
                elif line and not line.startswith("#"):
                    served.add(re.split(r"[{ ]", line, maxsplit=1)[0])

    def exported(name: str) -> bool:
        if name in served or name in families:
            return True
        base, _, suffix = name.rpartition("_")
        return suffix in ("bucket", "sum", "count") and families.get(base) in ("histogram", "summary")

    missing = sorted(name for name in used - SYNTHETIC if not exported(name))
    assert not missing, f"named by infra/ but served by no service: {missing}"
