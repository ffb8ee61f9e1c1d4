"""How far a long job is: units done out of a total (unknown until the job can tell), read by its heartbeat."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Progress:
    """Advanced by the code doing the work (an import, a run, a replay); headrace.web.jobs records it every second."""

    unit: str
    done: int = 0
    total: int | None = None

    def add(self, amount: int) -> None:
        self.done += amount

    def to_json(self) -> dict[str, int | str | None]:
        return {"done": self.done, "total": self.total, "unit": self.unit}
