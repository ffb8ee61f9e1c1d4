"""Flow runs: failure propagation and rerun from the failure, retries after a killed connection, the scheduler,
incremental steps, and the plan."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from prometheus_client import REGISTRY

from headrace.flows.definitions import Schedule
from headrace.settings import Settings
from tests.eventually import eventually
from tests.flows.conftest import apply, last_attempts, load_rows, rows_of, run_now
from transform.flows import metrics
from transform.flows.scheduler import FlowScheduler
from transform.flows.service import Flows
from transform.flows.store import expected_interval


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_a_failed_step_stops_its_dependents_while_an_independent_branch_finishes(
    flows: Flows, pool: asyncpg.Pool
) -> None:
    source, flow = unique("src"), unique("f")
    await load_rows(pool, source, [{"k": 1, "d": 0}, {"k": 2, "d": 2}])
    outs = {n: unique(n) for n in ("ratio", "after", "copy")}
    await apply(
        flows,
        {
            "name": flow,
            "steps": [
                {"name": "ratio", "input": source, "stages": [{"compute": {"r": "k / d"}}], "output": outs["ratio"]},
                {"name": "after", "input": outs["ratio"], "output": outs["after"]},
                {"name": "copy", "input": source, "output": outs["copy"]},
            ],
        },
    )
    run = await run_now(flows, flow)
    steps = last_attempts(run)
    assert run["status"] == "failed"
    assert steps["ratio"]["status"] == "failed" and "division by zero" in steps["ratio"]["error"]
    assert steps["ratio"]["attempt"] == 1 and not steps["ratio"]["transient"]  # a user error is not retried
    assert steps["after"]["status"] == "upstream_failed"
    assert steps["copy"]["status"] == "succeeded"

    # Fix the data, rerun from the failure: the step that succeeded is not run again.
    await pool.execute(f'UPDATE storage."{source}" SET d = 1 WHERE d = 0')
    rerun = await run_now(flows, flow, rerun_of=uuid.UUID(run["id"]))
    steps = last_attempts(rerun)
    assert rerun["status"] == "succeeded" and rerun["rerun_of"] == run["id"]
    assert {n: s["status"] for n, s in steps.items()} == {"ratio": "succeeded", "after": "succeeded", "copy": "skipped"}
    assert await rows_of(pool, outs["after"], "k", "r") == [(1, 1.0), (2, 1.0)]


@pytest.fixture
async def pausing_flows(settings: Settings, pool: asyncpg.Pool) -> Flows:
    own = settings.model_copy(update={"flow_scheduler": False, "flow_test_pause_seconds": 1.5})
    started = await Flows.start(own)
    yield started
    await started.stop()


async def test_a_step_whose_connection_is_terminated_mid_run_is_retried(
    pausing_flows: Flows, pool: asyncpg.Pool
) -> None:
    source, out, flow = unique("src"), unique("out"), unique("f")
    await load_rows(pool, source, [{"k": i} for i in range(10)])
    retry = {"attempts": 3, "backoff_seconds": 0.1, "max_seconds": 0.5}
    await apply(
        pausing_flows, {"name": flow, "retry": retry, "steps": [{"name": "copy", "input": source, "output": out}]}
    )
    stored = await pausing_flows.store.get(flow)
    run_id = await pausing_flows.runner.start(stored, "api")

    async def terminated() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
                f"headrace-flow {flow}:copy",
            )
        )

    await eventually(terminated, what="the step's session, sleeping before its commit")
    await pausing_flows.runner.wait(run_id)
    run = await pausing_flows.store.run(stored.id, run_id)
    attempts = [(s["attempt"], s["status"], s["transient"]) for s in run["steps"]]
    assert attempts == [(1, "failed", True), (2, "succeeded", False)], run
    assert run["status"] == "succeeded"
    assert len(await rows_of(pool, out, "k")) == 10


async def test_a_scheduled_flow_runs_by_itself(settings: Settings, pool: asyncpg.Pool) -> None:
    source, out, flow = unique("src"), unique("out"), unique("f")
    await load_rows(pool, source, [{"k": 1}])
    own = settings.model_copy(update={"flow_scheduler": True, "flow_poll_seconds": 0.2})
    flows = await Flows.start(own)
    try:
        definition = {
            "name": flow,
            "schedule": {"every_seconds": 1},
            "steps": [{"name": "c", "input": source, "output": out}],
        }
        stored = await apply(flows, definition)

        async def two_runs() -> bool:
            runs = await flows.store.runs(stored.id)
            done = [r for r in runs if r["status"] == "succeeded" and r["trigger"] == "schedule"]
            return len(done) >= 2

        await eventually(two_runs, timeout=30, what="two scheduled runs")
        # What a "flow overdue" alert compares: the schedule's interval, and the last success, which a scheduler
        # started afresh (a restarted transform) reads back from the recorded runs.
        await flows.scheduler.show_schedules()
        labels = {"flow": flow}
        assert REGISTRY.get_sample_value("headrace_flow_schedule_interval_seconds", labels) == 1
        metrics.LAST_SUCCESS.remove(flow)
        await FlowScheduler(flows.store, flows.runner, 1).show_schedules()
        last = await pool.fetchval(
            "SELECT max(finished_at) FROM headrace.flow_runs WHERE flow_id = $1 AND status = 'succeeded'", stored.id
        )
        assert REGISTRY.get_sample_value("headrace_flow_last_success_timestamp_seconds", labels) == last.timestamp()
        await flows.store.delete(flow)
        await flows.scheduler.show_schedules()
        assert REGISTRY.get_sample_value("headrace_flow_schedule_interval_seconds", labels) is None
    finally:
        await flows.stop()


def test_the_expected_interval_of_a_schedule_is_its_longest_gap() -> None:
    assert expected_interval(None) is None
    assert expected_interval(Schedule(every_seconds=30)) == 30
    assert expected_interval(Schedule(cron="*/15 * * * *")) == 15 * 60
    # Weekdays at nine: the weekend leaves three days, which must not count as overdue.
    assert expected_interval(Schedule(cron="0 9 * * 1-5")) == 3 * 86400


async def test_an_incremental_step_reads_only_rows_written_since_its_last_run(flows: Flows, pool: asyncpg.Pool) -> None:
    source, copy, totals, flow = unique("src"), unique("copy"), unique("tot"), unique("f")
    await load_rows(pool, source, [{"g": "a", "n": 1}, {"g": "b", "n": 2}])
    await apply(
        flows,
        {
            "name": flow,
            "steps": [
                {"name": "copy", "input": source, "incremental": True, "output": {"storage": copy, "mode": "append"}},
                {
                    "name": "totals",
                    "input": source,
                    "incremental": True,
                    "stages": [{"aggregate": {"group_by": ["g"], "measures": {"total": {"sum": "n"}}}}],
                    "output": {"storage": totals, "mode": "merge", "primary_key": ["g"]},
                },
            ],
        },
    )
    first = last_attempts(await run_now(flows, flow))
    assert first["copy"]["rows_read"] == 2
    await load_rows(pool, source, [{"g": "a", "n": 10}, {"g": "c", "n": 5}])
    second = last_attempts(await run_now(flows, flow))
    assert (second["copy"]["rows_read"], second["copy"]["rows_written"]) == (2, 2)
    assert second["totals"]["rows_written"] == 2  # groups a and c, recomputed; b untouched
    assert await rows_of(pool, copy, "g", "n") == [("a", 1), ("a", 10), ("b", 2), ("c", 5)]
    assert await rows_of(pool, totals, "g", "total") == [("a", 11), ("b", 2), ("c", 5)]
    third = last_attempts(await run_now(flows, flow))
    assert third["copy"]["rows_read"] == 0 and third["copy"]["rows_written"] == 0


async def test_the_plan_shows_sql_estimate_model_change_and_preview_and_writes_nothing(
    flows: Flows, pool: asyncpg.Pool
) -> None:
    source, out, flow = unique("src"), unique("out"), unique("f")
    await load_rows(pool, source, [{"k": i, "label": f"x{i}"} for i in range(50)])
    await apply(
        flows,
        {
            "name": flow,
            "steps": [
                {
                    "name": "big",
                    "input": source,
                    "stages": [{"filter": "k >= 10"}, {"compute": {"twice": "k * 2"}}],
                    "output": out,
                },
                {"name": "after", "input": out, "output": unique("after")},
            ],
        },
    )
    stored = await flows.store.get(flow)
    plan = await flows.planner.plan(stored.flow, {})
    big, after = plan["steps"]
    assert "WITH" in big["sql"] and "$1" in big["sql"] and 10 in big["parameters"]
    assert big["estimated_rows"] > 0
    assert len(big["preview"]) == 20 and all(r["k"] >= 10 and r["twice"] == 2 * r["k"] for r in big["preview"])
    added = {c["key"]: c["type"] for c in big["model_change"]["added"]}
    assert added == {"k": "integer", "label": "string", "twice": "integer"}
    assert "preview" not in after and "writes first" in after["note"]
    assert await pool.fetchval("SELECT count(*) FROM headrace.storages WHERE name = $1", out) == 0
    assert await flows.store.runs(stored.id) == []


async def test_a_run_left_running_by_a_dead_process_is_closed_and_can_be_rerun(
    flows: Flows, pool: asyncpg.Pool
) -> None:
    source, out, flow = unique("src"), unique("out"), unique("f")
    await load_rows(pool, source, [{"k": 1}])
    stored = await apply(flows, {"name": flow, "steps": [{"name": "c", "input": source, "output": out}]})
    # What a transform killed mid-run leaves: a run and a step attempt still 'running', and no lock held.
    dead = await flows.store.new_run(stored.id, "api", {}, None)
    await flows.store.step_started(dead, "c", 1)
    assert await flows.runner.close_interrupted() >= 1
    run = await flows.store.run(stored.id, dead)
    assert run["status"] == "failed" and "interrupted" in run["error"]
    assert run["steps"][0]["status"] == "failed"
    rerun = await run_now(flows, flow, rerun_of=dead)
    assert rerun["status"] == "succeeded" and last_attempts(rerun)["c"]["rows_written"] == 1
