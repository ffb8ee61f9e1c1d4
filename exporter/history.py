"""Run history (headrace.export_runs) and the export's horizon, which moves only with a run that was reported."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from exporter.definitions import Export
from headrace.postgres import Connection
from headrace.secrets import redact


@dataclass
class RunResult:
    run_id: uuid.UUID
    export: str
    kind: str  # live or regenerate
    status: str  # running, succeeded, empty or failed
    started_at: datetime
    files: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    dropped_privacy: int = 0
    unknown_time: int = 0
    report: str | None = None
    manifest: str | None = None
    range: dict[str, Any] = field(default_factory=dict)  # live: the xid range; regeneration: the period
    replay_of: uuid.UUID | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "export": self.export,
            "kind": self.kind,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "files": self.files,
            "rows": self.rows,
            "bytes": self.bytes,
            "dropped_privacy": self.dropped_privacy,
            "unknown_time": self.unknown_time,
            "report": self.report,
            "manifest": self.manifest,
            "range": self.range,
            "replay_of": str(self.replay_of) if self.replay_of else None,
        }


@dataclass(frozen=True)
class LastLive:
    """The latest live run of an export, as the planner needs it."""

    id: uuid.UUID
    status: str
    xid_from: int | None
    xid_to: int | None
    stamp: datetime | None
    delivered: list[str]


class History:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def horizon(self, export: Export) -> int:
        return int(await self.pool.fetchval("SELECT horizon::text FROM headrace.exports WHERE id = $1", export.id))

    async def last_live(self, export: Export) -> LastLive | None:
        row = await self.pool.fetchrow(
            "SELECT id, status, xid_from::text, xid_to::text, stamp, delivered FROM headrace.export_runs"
            " WHERE export_id = $1 AND kind = 'live' ORDER BY started_at DESC LIMIT 1",
            export.id,
        )
        if row is None:
            return None
        return LastLive(
            row["id"],
            row["status"],
            None if row["xid_from"] is None else int(row["xid_from"]),
            None if row["xid_to"] is None else int(row["xid_to"]),
            row["stamp"],
            list(row["delivered"]),
        )

    async def mark_interrupted(self, run_id: uuid.UUID) -> None:
        """A run left 'running' while nobody holds its export's lock: its process died."""
        await self.pool.execute(
            "UPDATE headrace.export_runs SET status = 'failed', finished_at = now(),"
            " error = 'interrupted: the run stopped before its report' WHERE id = $1 AND status = 'running'",
            run_id,
        )

    async def start(
        self,
        export: Export,
        result: RunResult,
        trigger: str,
        *,
        xids: tuple[int, int] | None = None,
        stamp: datetime | None = None,
        delivered: list[str] | None = None,
    ) -> None:
        await self.pool.execute(
            "INSERT INTO headrace.export_runs (id, export_id, kind, trigger, status, started_at, range, xid_from,"
            " xid_to, stamp, replay_of, delivered) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7::text::xid8,"
            " $8::text::xid8, $9, $10, $11)",
            result.run_id,
            export.id,
            result.kind,
            trigger,
            result.started_at,
            result.range,
            None if xids is None else str(xids[0]),
            None if xids is None else str(xids[1]),
            stamp,
            result.replay_of,
            delivered or [],
        )

    async def delivered(self, run_id: uuid.UUID, name: str) -> None:
        """Note a name put on the destination, so that a replay can remove it if it does not write it again."""
        await self.pool.execute(
            "UPDATE headrace.export_runs SET delivered = array_append(delivered, $2) WHERE id = $1"
            " AND NOT $2 = ANY(delivered)",
            run_id,
            name,
        )

    async def finish(self, result: RunResult, error: str | None = None, conn: Connection | None = None) -> None:
        await (conn or self.pool).execute(
            "UPDATE headrace.export_runs SET status = $2, finished_at = now(), files = $3, rows = $4, bytes = $5,"
            " dropped_privacy = $6, unknown_time = $7, report = $8, error = $9, file_list = $10 WHERE id = $1",
            result.run_id,
            result.status,
            len(result.files),
            result.rows,
            result.bytes,
            result.dropped_privacy,
            result.unknown_time,
            result.report,
            redact(error) if error else error,  # errors may quote an endpoint's URL with its query
            result.files,
        )

    async def finish_live(self, export: Export, result: RunResult, xids: tuple[int, int]) -> None:
        """The run's record and the new horizon, in one transaction: a run counts only once both are there."""
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await conn.execute(
                "UPDATE headrace.exports SET horizon = $3::text::xid8 WHERE id = $1 AND horizon = $2::text::xid8",
                export.id,
                str(xids[0]),
                str(xids[1]),
            )
            if moved != "UPDATE 1":
                # Only a run holding the export's lock moves its horizon; anything else is a bug worth stopping on.
                raise RuntimeError(f"the horizon of export {export.name!r} moved during the run")
            await self.finish(result, conn=conn)
