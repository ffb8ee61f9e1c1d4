"""The plan of a flow (a dry run): per step its SQL and parameters, estimated rows, model change and a preview."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from headrace.catalog import Catalog
from headrace.etl.sql import GENERIC_PLANS
from headrace.flows.compile import Source, StepError, compile_step, pivot_values_sql
from headrace.flows.definitions import EtlStep, Flow, PythonStep, UploadStep
from headrace.flows.formulas import FormulaError
from headrace.flows.graph import build_dag, reads_of, writes_of
from headrace.flows.output import plan_change
from headrace.flows.params import ParamError, chosen, declared_values
from headrace.flows.upload import remote_path, select_sql
from headrace.flows.validate import catalog_source
from headrace.models import Model
from headrace.postgres import Connection
from headrace.settings import Settings

PREVIEW_ROWS = 20


async def _estimate(conn: Connection, sql: str, params: list[Any]) -> int:
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class Planner:
    """Plans in one read-only, repeatable-read transaction: nothing is written, every step sees the same data."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.catalog = Catalog(pool, settings.max_columns)

    async def plan(self, flow: Flow, run_params: dict[str, Any], flow_id: Any = None) -> dict[str, Any]:
        dag = build_dag(flow)
        sources: dict[str, tuple[Source, Model, bool]] = {}
        pending: dict[str, str] = {}  # storage -> the step before that changes it, in this plan
        steps = []
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(GENERIC_PLANS)
            for name in dag.order:
                step = flow.step(name)
                for storage in [*reads_of(step), *writes_of(step)]:
                    if storage not in sources:
                        found = await catalog_source(self.catalog, storage)
                        if found is not None:
                            sources[storage] = found
                entry: dict[str, Any] = {"step": name, "type": step.type, "needs": list(dag.needs[name])}
                waiting = [s for s in reads_of(step) if s in pending]
                if waiting:
                    entry["note"] = f"reads {waiting[0]!r}, which step {pending[waiting[0]]!r} writes first"
                try:
                    if isinstance(step, EtlStep):
                        entry |= await self._etl(conn, step, sources, run_params, not waiting, flow_id)
                    elif isinstance(step, UploadStep):
                        entry |= await self._upload(conn, flow, step, sources, run_now=not waiting)
                    else:
                        entry |= self._python(step)
                except (StepError, FormulaError, ParamError, asyncpg.PostgresError) as exc:
                    entry["error"] = str(exc)
                for storage in writes_of(step):
                    pending[storage] = name
                steps.append(entry)
        return {"flow": flow.name, "order": list(dag.order), "steps": steps}

    async def _etl(
        self,
        conn: Connection,
        step: EtlStep,
        sources: dict[str, tuple[Source, Model, bool]],
        run_params: dict[str, Any],
        run_now: bool,
        flow_id: Any = None,
    ) -> dict[str, Any]:
        plain = {k: v[0] for k, v in sources.items()}
        values: dict[str, Any] = {}
        found: dict[str, Any] = {}
        if step.param is not None:
            name, spec = step.param
            declared = declared_values(spec)
            listed = declared[0] if declared is not None else None
            if listed is not None and name in run_params:
                listed = chosen(listed, run_params[name])
            if listed:
                values[name] = listed[0]
                found["param"] = {"name": name, "values": len(listed), "planned_for": str(listed[0])}
            else:
                found["param"] = {"name": name, "values": "read when the step runs"}
        pivots = {}
        if run_now:
            for index, stage in enumerate(step.stages):
                if stage.pivot is not None and stage.pivot.values is None:
                    sql, params = pivot_values_sql(step, plain, index, values)
                    pivots[index] = [r[0] for r in await conn.fetch(sql, *params)][: stage.pivot.max_values]
        xid_range = await self._horizon(conn, step, flow_id) if step.incremental else None
        if xid_range is not None:
            found["incremental"] = {"xid_from": str(xid_range[0]), "xid_to": str(xid_range[1])}
        compiled = compile_step(step, plain, values, pivots, xid_range)
        output = sources.get(step.output.storage)
        model, locked = (output[1], output[2]) if output is not None else (Model(), False)
        change = plan_change(model, [(k, t) for k, _, t in compiled.outputs], locked)
        new_model = model.apply(change) if change else model
        table = output[0].table if output is not None else ""
        sources[step.output.storage] = (Source(step.output.storage, table, new_model.columns), new_model, locked)
        sql = compiled.select_sql()
        found |= {
            "sql": sql,
            "parameters": [
                p if isinstance(p, int | float | str | bool) or p is None else str(p) for p in compiled.params
            ],
            "output": step.output.model_dump(),
            "model_change": change.to_json() if change else None,
            "columns": [{"name": k, "type": t.value} for k, _, t in compiled.outputs],
        }
        if run_now:
            found["estimated_rows"] = await _estimate(conn, sql, compiled.params)
            rows = await conn.fetch(f"{sql} LIMIT {PREVIEW_ROWS}", *compiled.params)
            found["preview"] = [dict(r) for r in rows]
        return found

    async def _horizon(self, conn: Connection, step: EtlStep, flow_id: Any) -> tuple[int, int]:
        """The transactions an incremental step's next run would read: from its horizon to the snapshot's xmin."""
        stored = None
        if flow_id is not None:
            stored = await conn.fetchval(
                "SELECT horizon::text FROM headrace.flow_step_horizons WHERE flow_id = $1 AND step = $2",
                flow_id,
                step.name,
            )
        start = int(stored or 0)
        end = int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
        return start, max(start, end)

    async def _upload(
        self,
        conn: Connection,
        flow: Flow,
        step: UploadStep,
        sources: dict[str, tuple[Source, Model, bool]],
        run_now: bool,
    ) -> dict[str, Any]:
        from datetime import UTC, datetime

        target = str(remote_path(step, datetime.now(UTC), "<run id>", flow.name))
        found: dict[str, Any] = {"target": target, "format": step.format, "gzip": step.gzip}
        if not run_now or step.storage not in sources:
            return found
        storage = await self.catalog.get(step.storage)
        sql, params, _ = select_sql(step, storage, sources[step.storage][1])
        found |= {"sql": sql, "parameters": params, "estimated_rows": await _estimate(conn, sql, params)}
        return found

    def _python(self, step: PythonStep) -> dict[str, Any]:
        return {"reads": step.reads, "writes": step.writes, "timeout_seconds": step.timeout_seconds}
