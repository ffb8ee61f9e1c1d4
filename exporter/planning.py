"""Planning a live run: the transactions it ships, from the horizon to the snapshot's xmin, or a failed run's again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from exporter.definitions import Export
from exporter.history import History
from headrace.catalog.columns import TRANSACTION_COLUMN


@dataclass(frozen=True)
class XidRange:
    """The rows written by transactions [start, end): every one of them ended before the run began."""

    start: int
    end: int

    @property
    def key(self) -> str:
        """What file guids are derived from: the same range always gives the same names."""
        return f"xid:{self.start}:{self.end}"

    @property
    def where(self) -> str:
        # Integers of our own making, so inlining them is safe; the _xid index serves the range.
        return f"{TRANSACTION_COLUMN} >= '{self.start}'::xid8 AND {TRANSACTION_COLUMN} < '{self.end}'::xid8"

    def to_json(self) -> dict[str, str]:
        return {"xid_from": str(self.start), "xid_to": str(self.end)}


@dataclass
class Plan:
    run_id: uuid.UUID
    started_at: datetime
    stamp_at: datetime  # the report's timestamp; a replayed range keeps the original one
    range: XidRange
    replay_of: uuid.UUID | None = None
    # Names an earlier attempt at this range put on the destination: those this run does not write again go.
    inherited: list[str] = field(default_factory=list)


async def plan_live(history: History, export: Export, snapshot_xmin: int) -> Plan:
    """The next range, or the last run's again when it failed or died: same range, same stamp, same names.

    The caller holds the export's lock, so a run still marked 'running' is one whose process died.
    """
    started = datetime.now(UTC)
    horizon = await history.horizon(export)
    last = await history.last_live(export)
    if (
        last is not None
        and last.status in ("running", "failed")
        and last.xid_from == horizon
        and last.xid_to is not None
        and last.stamp is not None
    ):
        if last.status == "running":
            await history.mark_interrupted(last.id)
        return Plan(uuid.uuid4(), started, last.stamp, XidRange(horizon, last.xid_to), last.id, last.delivered)
    # The snapshot's xmin never goes back, but a horizon from a restored backup might be ahead of it.
    return Plan(uuid.uuid4(), started, started, XidRange(horizon, max(horizon, snapshot_xmin)))
