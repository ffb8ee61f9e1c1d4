"""Flow definitions and run history in Postgres (headrace.flows, flow_runs, flow_step_runs), credentials sealed."""

from __future__ import annotations

import builtins
import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from croniter import croniter

from headrace.flows.definitions import Flow, Schedule, UploadStep
from headrace.secrets import SealedDefinitions, SecretFields
from headrace.settings import Settings

# Upload destinations carry SFTP or FTP credentials: sealed at rest, shown as ***.
SECRETS = SecretFields(
    sealed=frozenset({"password", "private_key"}),
    shown=frozenset({"kind", "host", "port", "user", "host_key", "ca_cert", "path"}),
)


class FlowNotFound(LookupError):
    pass


class RunNotFound(LookupError):
    pass


@dataclass(frozen=True)
class StoredFlow:
    id: uuid.UUID
    flow: Flow
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The definition as shown: upload credentials masked."""
        data = self.flow.to_json()
        for step in data["steps"]:
            if step.get("type") == "upload":
                step["destination"] = SECRETS.mask(step["destination"])
        return {
            "id": str(self.id),
            "name": self.flow.name,
            "definition": data,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_run_at": self.next_run_at,
        }


def next_due(schedule: Schedule | None, after: datetime) -> datetime | None:
    """When a schedule is next due after a moment (cron in UTC; every N seconds from that moment)."""
    if schedule is None:
        return None
    if schedule.cron is not None:
        return croniter(schedule.cron, after.astimezone(UTC)).get_next(datetime)
    assert schedule.every_seconds is not None
    return datetime.fromtimestamp(after.timestamp() + schedule.every_seconds, UTC)


_STEP_COLUMNS = (
    "step, attempt, status, started_at, finished_at, rows_read, rows_written, sql, parameters, model_change, error,"
    ' transient, "values", output, transactions'
)


def expected_interval(schedule: Schedule | None) -> float | None:
    """The longest a schedule leaves between two runs, in seconds: what an "overdue" alert allows for."""
    if schedule is None:
        return None
    if schedule.cron is None:
        assert schedule.every_seconds is not None
        return schedule.every_seconds
    return _longest_cron_gap(schedule.cron)


@functools.lru_cache(maxsize=256)
def _longest_cron_gap(cron: str) -> float:
    # Over a week of fire times, so that a weekday-only schedule allows for its weekend; at least one gap, so
    # that a monthly one counts its month. A minutely cron is 10080 steps, ~0.2 s once per expression.
    times = croniter(cron, datetime.now(UTC))
    previous = times.get_next(datetime)
    end = previous + timedelta(days=7)
    longest = 0.0
    while True:
        following = times.get_next(datetime)
        longest = max(longest, (following - previous).total_seconds())
        if following > end:
            return longest
        previous = following


class FlowStore:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.sealed = SealedDefinitions(pool, settings, SECRETS, "headrace.flows")

    def _seal(self, flow: Flow) -> dict[str, Any]:
        data = flow.to_json()
        if any(isinstance(s, UploadStep) for s in flow.steps):
            return self.sealed.seal(data)
        return data

    async def _flow(self, row: asyncpg.Record) -> StoredFlow:
        definition = row["definition"]
        if any(s.get("type") == "upload" for s in definition.get("steps", [])):
            definition = await self.sealed.open(row["id"], definition)
        return StoredFlow(
            row["id"], Flow.model_validate(definition), row["created_at"], row["updated_at"], row["next_run_at"]
        )

    async def apply(self, flow: Flow) -> tuple[StoredFlow, bool]:
        """Create or replace the flow by name; (the stored flow, whether it is new). A new schedule starts now."""
        now = datetime.now(UTC)
        row = await self.pool.fetchrow(
            "INSERT INTO headrace.flows (id, name, definition, next_run_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now(),"
            "  next_run_at = CASE WHEN headrace.flows.definition -> 'schedule' = EXCLUDED.definition -> 'schedule'"
            "   THEN headrace.flows.next_run_at ELSE EXCLUDED.next_run_at END"
            " RETURNING *, (xmax = 0) AS created",
            uuid.uuid4(),
            flow.name,
            self._seal(flow),
            next_due(flow.schedule, now),
        )
        assert row is not None  # an upsert with RETURNING always returns its row
        return await self._flow(row), bool(row["created"])

    async def get(self, name: str) -> StoredFlow:
        row = await self.pool.fetchrow("SELECT * FROM headrace.flows WHERE name = $1", name)
        if row is None:
            raise FlowNotFound(f"no flow named {name!r}")
        return await self._flow(row)

    async def list(self) -> builtins.list[StoredFlow]:
        return [await self._flow(r) for r in await self.pool.fetch("SELECT * FROM headrace.flows ORDER BY name")]

    async def delete(self, name: str) -> None:
        if await self.pool.execute("DELETE FROM headrace.flows WHERE name = $1", name) == "DELETE 0":
            raise FlowNotFound(f"no flow named {name!r}")

    async def claim_due(self, now: datetime) -> builtins.list[StoredFlow]:
        """Flows due now, each claimed by moving its next time past now (one instance takes each)."""
        rows = await self.pool.fetch("SELECT * FROM headrace.flows WHERE next_run_at <= $1 ORDER BY next_run_at", now)
        claimed = []
        for row in rows:
            stored = await self._flow(row)
            # Only the instance whose update finds the time it read claims the flow.
            status = await self.pool.execute(
                "UPDATE headrace.flows SET next_run_at = $2 WHERE id = $1 AND next_run_at = $3",
                row["id"],
                next_due(stored.flow.schedule, now),
                row["next_run_at"],
            )
            if status == "UPDATE 1":
                claimed.append(stored)
        return claimed

    # ------------------------------------------------------------ run history

    async def last_successes(self) -> dict[uuid.UUID, datetime]:
        """When each flow's latest successful run ended (what the last-success gauge says)."""
        rows = await self.pool.fetch(
            "SELECT flow_id, max(finished_at) AS at FROM headrace.flow_runs"
            " WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY flow_id"
        )
        return {r["flow_id"]: r["at"] for r in rows}

    async def new_run(
        self, flow_id: uuid.UUID, trigger: str, params: dict[str, Any], rerun_of: uuid.UUID | None
    ) -> uuid.UUID:
        run_id = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO headrace.flow_runs (id, flow_id, trigger, params, status, rerun_of)"
            " VALUES ($1, $2, $3, $4, 'running', $5)",
            run_id,
            flow_id,
            trigger,
            params,
            rerun_of,
        )
        return run_id

    async def finish_run(self, run_id: uuid.UUID, status: str, error: str | None) -> None:
        await self.pool.execute(
            "UPDATE headrace.flow_runs SET status = $2, error = $3, finished_at = clock_timestamp() WHERE id = $1",
            run_id,
            status,
            error,
        )

    async def step_started(self, run_id: uuid.UUID, step: str, attempt: int, status: str = "running") -> None:
        await self.pool.execute(
            "INSERT INTO headrace.flow_step_runs (run_id, step, attempt, status, finished_at)"
            " VALUES ($1, $2, $3, $4, CASE WHEN $4 = 'running' THEN NULL ELSE clock_timestamp() END)",
            run_id,
            step,
            attempt,
            status,
        )

    async def step_finished(self, run_id: uuid.UUID, step: str, attempt: int, **fields: Any) -> None:
        """Record an attempt's end: status and whichever of rows, sql, parameters, model change, error, values."""
        names = list(fields)
        sets = ", ".join(f'"{n}" = ${i + 4}' for i, n in enumerate(names))
        await self.pool.execute(
            f"UPDATE headrace.flow_step_runs SET finished_at = clock_timestamp(){', ' if sets else ''}{sets}"
            " WHERE run_id = $1 AND step = $2 AND attempt = $3",
            run_id,
            step,
            attempt,
            *fields.values(),
        )

    async def runs(self, flow_id: uuid.UUID, limit: int = 50) -> builtins.list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM headrace.flow_runs WHERE flow_id = $1 ORDER BY started_at DESC LIMIT $2", flow_id, limit
        )
        return [_run_json(r) for r in rows]

    async def last_runs(self) -> dict[uuid.UUID, dict[str, Any]]:
        """Each flow's latest run, for lists that show every flow with its status (one statement for all)."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (flow_id) * FROM headrace.flow_runs ORDER BY flow_id, started_at DESC"
        )
        return {r["flow_id"]: _run_json(r) for r in rows}

    async def run(self, flow_id: uuid.UUID, run_id: uuid.UUID) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT * FROM headrace.flow_runs WHERE flow_id = $1 AND id = $2", flow_id, run_id
        )
        if row is None:
            raise RunNotFound(f"no run {run_id} of this flow")
        steps = await self.pool.fetch(
            f"SELECT {_STEP_COLUMNS} FROM headrace.flow_step_runs WHERE run_id = $1 ORDER BY started_at, attempt",
            run_id,
        )
        return _run_json(row) | {"steps": [_step_json(s) for s in steps]}

    async def last_statuses(self, flow_id: uuid.UUID) -> dict[str, dict[str, Any]]:
        """Each step's last attempt in the flow's latest run that ran it: status and when."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (s.step) s.step, s.status, s.finished_at, r.id AS run_id"
            " FROM headrace.flow_step_runs s JOIN headrace.flow_runs r ON r.id = s.run_id"
            " WHERE r.flow_id = $1 ORDER BY s.step, s.started_at DESC, s.attempt DESC",
            flow_id,
        )
        return {
            r["step"]: {"status": r["status"], "finished_at": r["finished_at"], "run_id": str(r["run_id"])}
            for r in rows
        }

    async def step_attempts(self, run_id: uuid.UUID) -> builtins.list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_STEP_COLUMNS} FROM headrace.flow_step_runs WHERE run_id = $1 ORDER BY started_at, attempt",
            run_id,
        )
        return [_step_json(r) for r in rows]


def _run_json(row: asyncpg.Record) -> dict[str, Any]:
    started, finished = row["started_at"], row["finished_at"]
    return {
        "id": str(row["id"]),
        "trigger": row["trigger"],
        "params": row["params"],
        "status": row["status"],
        "rerun_of": str(row["rerun_of"]) if row["rerun_of"] else None,
        "started_at": started,
        "finished_at": finished,
        "duration_seconds": (finished - started).total_seconds() if finished else None,
        "error": row["error"],
    }


def _step_json(row: asyncpg.Record) -> dict[str, Any]:
    data = dict(row)
    started, finished = data["started_at"], data["finished_at"]
    data["duration_seconds"] = (finished - started).total_seconds() if finished else None
    return data
