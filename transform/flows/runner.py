"""Flow runs: one at a time per flow (an advisory lock), steps in DAG order with retries, history in Postgres."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import asdict
from typing import Any

import asyncpg

from headrace.catalog import Catalog
from headrace.flows.definitions import EtlStep, PythonStep, UploadStep
from headrace.flows.graph import build_dag
from headrace.flows.retry import backoff_seconds, is_transient
from headrace.postgres import connect
from headrace.secrets import redact
from headrace.settings import Settings
from transform.flows import metrics
from transform.flows.etl_run import EtlRun, StepFailed, StepOutcome
from transform.flows.other_steps import run_python, run_upload
from transform.flows.store import FlowStore, StoredFlow

log = logging.getLogger(__name__)
DONE = ("succeeded", "skipped")


class RunInProgress(RuntimeError):
    """Another run of the flow holds its lock (in this instance or another)."""


def lock_key(flow_id: uuid.UUID) -> int:
    return uuid.uuid5(flow_id, "flow-run").int % (2**63)


class FlowRunner:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, store: FlowStore, pause_seconds: float = 0.0) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.catalog = Catalog(pool, settings.max_columns)
        self.pause_seconds = pause_seconds
        self.tasks: dict[uuid.UUID, asyncio.Task[str]] = {}

    async def start(
        self, stored: StoredFlow, trigger: str, params: dict[str, Any] | None = None, rerun_of: uuid.UUID | None = None
    ) -> uuid.UUID:
        """Take the flow's lock, record the run, and run it in the background; RunInProgress if one is going."""
        lock = await connect(self.settings, application_name=f"headrace-flow-lock {stored.flow.name}"[:63])
        try:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(stored.id)):
                raise RunInProgress(f"flow {stored.flow.name!r} is running already")
            run_id = await self.store.new_run(stored.id, trigger, params or {}, rerun_of)
        except BaseException:
            await lock.close()
            raise
        task = asyncio.create_task(self._execute(lock, stored, run_id, trigger, params or {}, rerun_of))
        self.tasks[run_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(run_id, None))
        return run_id

    async def close_interrupted(self) -> int:
        """Mark failed the runs still 'running' whose flow's lock nobody holds: their process died mid-run (another
        instance's live run holds its lock and is left alone). A rerun of such a run starts from its failure."""
        closed = 0
        rows = await self.pool.fetch("SELECT id, flow_id FROM headrace.flow_runs WHERE status = 'running'")
        if not rows:
            return 0
        conn = await connect(self.settings, application_name="headrace-flow-recovery")
        try:
            for row in rows:
                if row["id"] in self.tasks or not await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", lock_key(row["flow_id"])
                ):
                    continue
                try:
                    await self.store.finish_run(row["id"], "failed", "interrupted: the service running it stopped")
                    await self.pool.execute(
                        "UPDATE headrace.flow_step_runs SET status = 'failed', finished_at = clock_timestamp(),"
                        " error = 'interrupted', transient = true WHERE run_id = $1 AND status = 'running'",
                        row["id"],
                    )
                    closed += 1
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(row["flow_id"]))
        finally:
            await conn.close()
        return closed

    async def wait(self, run_id: uuid.UUID) -> None:
        task = self.tasks.get(run_id)
        if task is not None:
            await asyncio.shield(task)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _previous(self, rerun_of: uuid.UUID | None) -> tuple[set[str], dict[str, set[str]]]:
        """What a rerun keeps of the run it repeats: steps that succeeded, and values of parametric steps that did."""
        if rerun_of is None:
            return set(), {}
        steps: set[str] = set()
        values: dict[str, set[str]] = {}
        for attempt in await self.store.step_attempts(rerun_of):
            if attempt["status"] in DONE:
                steps.add(attempt["step"])
            for key, state in (attempt["values"] or {}).items():
                if state.get("status") == "succeeded":
                    values.setdefault(attempt["step"], set()).add(key)
        return steps, values

    async def _execute(
        self,
        lock: asyncpg.Connection,
        stored: StoredFlow,
        run_id: uuid.UUID,
        trigger: str,
        params: dict[str, Any],
        rerun_of: uuid.UUID | None,
    ) -> str:
        flow = stored.flow
        metrics.RUNNING.inc()
        status, error = "failed", None
        try:
            dag = build_dag(flow)
            kept, kept_values = await self._previous(rerun_of)
            states: dict[str, str] = {}
            for name in dag.order:
                failed = [d for d in dag.needs[name] if states.get(d) not in DONE]
                if failed:
                    states[name] = "upstream_failed"
                    await self.store.step_started(run_id, name, 0, "upstream_failed")
                    await self.store.step_finished(run_id, name, 0, error=f"{failed[0]} did not succeed")
                elif name in kept:
                    states[name] = "skipped"
                    await self.store.step_started(run_id, name, 0, "skipped")
                    await self.store.step_finished(run_id, name, 0, error=f"succeeded in run {rerun_of}")
                else:
                    states[name] = await self._step(stored, run_id, name, params, kept_values.get(name, set()))
                metrics.STEPS.labels(flow.name, name, states[name]).inc()
            bad = [n for n, s in states.items() if s not in DONE]
            status = "failed" if bad else "succeeded"
            error = f"steps not done: {', '.join(bad)}" if bad else None
        except asyncio.CancelledError:
            error = "the run was stopped (service shutting down)"
            raise
        except Exception as exc:
            log.exception("flow run crashed", extra={"flow": flow.name})
            error = redact(f"{type(exc).__name__}: {exc}")
        finally:
            metrics.RUNNING.dec()
            await asyncio.shield(self._finish(lock, flow.name, run_id, trigger, status, error))
        return status

    async def _finish(
        self, lock: asyncpg.Connection, flow: str, run_id: uuid.UUID, trigger: str, status: str, error: str | None
    ) -> None:
        try:
            await self.store.finish_run(run_id, status, error)
        finally:
            await lock.close()  # releases the advisory lock
        metrics.RUNS.labels(flow, trigger, status).inc()
        if status == "succeeded":
            metrics.LAST_SUCCESS.labels(flow).set(time.time())

    async def _step(
        self, stored: StoredFlow, run_id: uuid.UUID, name: str, params: dict[str, Any], done: set[str]
    ) -> str:
        """Attempts until one succeeds, a failure is not transient, or the retry policy is spent."""
        flow = stored.flow
        step = flow.step(name)
        policy = flow.retry_of(step)
        attempt = 0
        while True:
            attempt += 1
            await self.store.step_started(run_id, name, attempt)
            started = time.monotonic()
            try:
                outcome = await self._attempt(stored, run_id, step, params, done)
            except StepFailed as exc:
                outcome, message, transient = exc.outcome, str(exc), exc.transient
            except Exception as exc:  # a bug or the unexpected: recorded, retried only if the cause is transient
                if not is_transient(exc):
                    log.exception("step crashed", extra={"flow": flow.name, "step": name})
                outcome, message, transient = StepOutcome(), f"{type(exc).__name__}: {exc}", is_transient(exc)
            else:
                await self._record(run_id, name, attempt, "succeeded", outcome, None, False)
                metrics.DURATION.labels(flow.name, name).observe(time.monotonic() - started)
                metrics.ROWS_WRITTEN.labels(flow.name, name).inc(outcome.rows_written)
                metrics.ROWS_READ.labels(flow.name, name).inc(outcome.rows_read)
                return "succeeded"
            await self._record(run_id, name, attempt, "failed", outcome, redact(message), transient)
            metrics.DURATION.labels(flow.name, name).observe(time.monotonic() - started)
            done |= {k for k, v in (outcome.values or {}).items() if v.get("status") == "succeeded"}
            if not transient or attempt >= policy.attempts:
                return "failed"
            metrics.RETRIES.labels(flow.name, name).inc()
            await asyncio.sleep(backoff_seconds(policy, attempt))

    async def _record(
        self,
        run_id: uuid.UUID,
        name: str,
        attempt: int,
        status: str,
        outcome: StepOutcome,
        error: str | None,
        transient: bool,
    ) -> None:
        fields = asdict(outcome)
        fields["model_change"] = fields["model_change"] or None
        await self.store.step_finished(run_id, name, attempt, status=status, error=error, transient=transient, **fields)

    async def _attempt(
        self,
        stored: StoredFlow,
        run_id: uuid.UUID,
        step: EtlStep | PythonStep | UploadStep,
        params: dict[str, Any],
        done: set[str],
    ) -> StepOutcome:
        if isinstance(step, EtlStep):
            attempt = EtlRun(
                self.settings, self.catalog, stored.id, stored.flow.name, str(run_id), step, self.pause_seconds
            )
            return await attempt.run(params, done)
        if isinstance(step, PythonStep):
            return await run_python(self.settings, self.pool, stored.flow.name, str(run_id), step, params)
        return await run_upload(self.settings, self.pool, self.catalog, stored.flow.name, str(run_id), step)
