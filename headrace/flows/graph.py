"""A flow's DAG: what each step reads and writes, dependencies (explicit and implied by storages), order, cycles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from headrace.flows.definitions import EtlStep, Flow, FlowError, PythonStep, UploadStep

AnyStep = EtlStep | PythonStep | UploadStep


def reads_of(step: AnyStep) -> list[str]:
    """The storages a step reads, in the order it names them."""
    if isinstance(step, EtlStep):
        found = [step.input]
        found += [s.join.storage for s in step.stages if s.join is not None]
        param = step.param
        if param is not None and param[1].distinct is not None:
            found.append(param[1].distinct.storage)
        return list(dict.fromkeys(found))
    if isinstance(step, PythonStep):
        return list(dict.fromkeys(step.reads))
    return [step.storage]


def writes_of(step: AnyStep) -> list[str]:
    if isinstance(step, EtlStep):
        return [step.output.storage]
    if isinstance(step, PythonStep):
        return list(dict.fromkeys(step.writes))
    return []


@dataclass(frozen=True)
class Dag:
    """Steps in a valid run order, and each step's direct dependencies (explicit `needs` and storages)."""

    order: tuple[str, ...]
    needs: dict[str, tuple[str, ...]]

    def downstream(self, name: str) -> set[str]:
        """Every step that depends on `name`, directly or not."""
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for step, deps in self.needs.items():
                if current in deps and step not in found:
                    found.add(step)
                    frontier.append(step)
        return found


def _errors_of_names(flow: Flow) -> list[dict[str, str]]:
    errors = []
    seen: set[str] = set()
    for step in flow.steps:
        if step.name in seen:
            errors.append({"field": f"steps.{step.name}.name", "message": "two steps have this name"})
        seen.add(step.name)
    for step in flow.steps:
        for need in step.needs:
            if need not in seen:
                errors.append({"field": f"steps.{step.name}.needs", "message": f"no step named {need!r}"})
            elif need == step.name:
                errors.append({"field": f"steps.{step.name}.needs", "message": "a step cannot need itself"})
    return errors


def build_dag(flow: Flow) -> Dag:
    """The DAG, or FlowError naming unknown or duplicate steps and the steps of a cycle."""
    errors = _errors_of_names(flow)
    if errors:
        raise FlowError(errors)
    writers: dict[str, list[str]] = {}
    for step in flow.steps:
        for storage in writes_of(step):
            writers.setdefault(storage, []).append(step.name)
    needs: dict[str, tuple[str, ...]] = {}
    for step in flow.steps:
        implied = [w for storage in reads_of(step) for w in writers.get(storage, [])]
        if step.name in implied:
            raise FlowError(
                [{"field": f"steps.{step.name}", "message": "the step reads the storage it writes (a cycle)"}]
            )
        needs[step.name] = tuple(dict.fromkeys([*step.needs, *implied]))
    return Dag(_topological(flow.steps, needs), needs)


def _topological(steps: Iterable[AnyStep], needs: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Kahn's order, stable: among the steps ready at once, the one defined first goes first."""
    names = [s.name for s in steps]
    waiting = {n: set(needs[n]) for n in names}
    order: list[str] = []
    while waiting:
        ready = [n for n in names if n in waiting and not waiting[n]]
        if not ready:
            cycle = _a_cycle(waiting)
            raise FlowError(
                [{"field": f"steps.{cycle[0]}.needs", "message": f"a cycle: {' -> '.join([*cycle, cycle[0]])}"}]
            )
        for name in ready:
            order.append(name)
            del waiting[name]
        for deps in waiting.values():
            deps.difference_update(ready)
    return tuple(order)


def _a_cycle(waiting: dict[str, set[str]]) -> list[str]:
    """One cycle among steps that all still wait (each waits on another of them)."""
    start = next(iter(waiting))
    path: list[str] = []
    current = start
    while current not in path:
        path.append(current)
        current = next(iter(sorted(waiting[current])))
    cycle = path[path.index(current) :]
    # Shown in the direction of the dependency: a step, then the step that needs it.
    return list(reversed(cycle))
