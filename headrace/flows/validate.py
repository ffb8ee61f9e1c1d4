"""Apply-time checks of a flow against the catalog: storages and fields exist, formulas type-check, outputs fit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from headrace.catalog import Catalog, StorageNotFound
from headrace.flows.compile import CompiledStep, Source, StepError, compile_step
from headrace.flows.definitions import EtlStep, Flow, FlowError, Param, PythonStep, UploadStep
from headrace.flows.formulas import FormulaError, compile_text
from headrace.flows.graph import Dag, build_dag, reads_of
from headrace.flows.output import plan_change
from headrace.flows.params import ParamError, declared_values
from headrace.flows.upload import check_template
from headrace.models import Model
from headrace.models.types import ColumnType

# A stand-in value of each type, to type-check a step whose parameter values are only known when it runs.
SAMPLE = {
    ColumnType.INTEGER: 0,
    ColumnType.FLOAT: 0.0,
    ColumnType.BOOLEAN: False,
    ColumnType.DATE: date(2000, 1, 1),
    ColumnType.STRING: "",
}


@dataclass
class Checked:
    """A flow that passed: its DAG, what each ETL step would output, and what could not be checked before a run."""

    dag: Dag
    outputs: dict[str, CompiledStep] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)


async def catalog_source(catalog: Catalog, name: str) -> tuple[Source, Model, bool] | None:
    """A storage as steps read it, its model and whether it is locked; None when there is no such storage."""
    try:
        storage = await catalog.get(name)
    except StorageNotFound:
        return None
    model = await catalog.model(storage.id)
    return Source(name, storage.qualified_table, model.columns), model, storage.locked


class _Checker:
    def __init__(self, flow: Flow, catalog: Catalog) -> None:
        self.flow = flow
        self.catalog = catalog
        self.sources: dict[str, Source] = {}
        self.models: dict[str, tuple[Model, bool]] = {}
        self.unknown: dict[str, str] = {}  # storage -> the python step that writes it, model unknown until it runs
        self.errors: list[dict[str, str]] = []

    async def load(self, names: list[str]) -> None:
        for name in names:
            if name in self.sources or name in self.unknown:
                continue
            found = await catalog_source(self.catalog, name)
            if found is not None:
                self.sources[name], model, locked = found
                self.models[name] = (model, locked)

    def error(self, step: str, where: str, message: str) -> None:
        self.errors.append({"field": f"steps.{step}.{where}", "message": message})


async def param_sample(checker: _Checker, step: EtlStep, name: str, spec: Param) -> Any:
    """The first declared value, or a stand-in of the distinct column's type."""
    declared = declared_values(spec)
    if declared is not None:
        return declared[0][0]
    assert spec.distinct is not None
    source = checker.sources.get(spec.distinct.storage)
    if source is None:
        raise StepError(f"params.{name}.distinct.storage", f"no storage named {spec.distinct.storage!r}")
    column = next((c for c in source.columns if c.key == spec.distinct.column), None)
    if column is None:
        raise StepError(f"params.{name}.distinct.column", f"no field {spec.distinct.column!r}")
    return SAMPLE.get(column.type, "")


async def _check_etl(checker: _Checker, step: EtlStep, checked: Checked) -> None:
    values = {}
    if step.param is not None:
        name, spec = step.param
        values[name] = await param_sample(checker, step, name, spec)
    for index, stage in enumerate(step.stages):
        if stage.pivot is not None and stage.pivot.values is None and index != len(step.stages) - 1:
            raise StepError(f"stages[{index}].pivot.values", "a pivot whose values are read when it runs comes last")
    compiled = compile_step(step, checker.sources, values)
    outputs = [(k, t) for k, _, t in compiled.outputs]
    keys = {k for k, _ in outputs}
    for key in step.output.primary_key:
        if key not in keys:
            raise StepError("output.primary_key", f"the step gives no field {key!r}")
    model, locked = checker.models.get(step.output.storage, (Model(), False))
    change = plan_change(model, outputs, locked)
    new_model = model.apply(change)
    checker.models[step.output.storage] = (new_model, locked)
    table = checker.sources[step.output.storage].table if step.output.storage in checker.sources else ""
    checker.sources[step.output.storage] = Source(step.output.storage, table, new_model.columns)
    checked.outputs[step.name] = compiled


def _check_upload(checker: _Checker, step: UploadStep) -> None:
    check_template(step.destination.path)
    source = checker.sources.get(step.storage)
    if source is None:
        raise StepError("storage", f"no storage named {step.storage!r}")
    keys = [c.key for c in source.columns]
    for key in step.columns or []:
        if key not in keys:
            raise StepError("columns", f"no field {key!r} in {step.storage!r}")
    if step.filter:
        scope = {c.key: (c.name, c.type) for c in source.columns}
        try:
            expr, _ = compile_text(step.filter, scope, [], {})
        except FormulaError as exc:
            raise StepError("filter", str(exc)) from None
        if expr.type not in (ColumnType.BOOLEAN, None):
            raise StepError("filter", f"a filter is true or false; this formula gives a {expr.type.value}")


async def check_flow(flow: Flow, catalog: Catalog) -> Checked:
    """Check every step in run order against the catalog and the outputs of the steps before it; FlowError lists
    every step at fault (a step reading a storage only a python step writes is checked when it runs)."""
    checker = _Checker(flow, catalog)
    checked = Checked(build_dag(flow))
    for name in checked.dag.order:
        step = flow.step(name)
        await checker.load(reads_of(step))
        unknown = [s for s in reads_of(step) if s in checker.unknown]
        if unknown:
            checked.warnings.append(
                {
                    "field": f"steps.{name}",
                    "message": f"reads {unknown[0]!r}, written by the python step {checker.unknown[unknown[0]]!r}:"
                    " checked when it runs",
                }
            )
            _mark_unknown(checker, step)
            continue
        try:
            if isinstance(step, EtlStep):
                await checker.load([step.output.storage])
                await _check_etl(checker, step, checked)
            elif isinstance(step, UploadStep):
                _check_upload(checker, step)
            else:
                # A storage the script writes keeps the model it has now, or is unknown until the script ran.
                await checker.load(step.writes)
                for storage in step.writes:
                    if storage not in checker.sources:
                        checker.unknown[storage] = step.name
        except StepError as exc:
            checker.error(name, exc.field, exc.message)
            _mark_unknown(checker, step)
        except (ParamError, FormulaError) as exc:
            checker.error(name, "params", str(exc))
            _mark_unknown(checker, step)
    if checker.errors:
        raise FlowError(checker.errors)
    return checked


def _mark_unknown(checker: _Checker, step: EtlStep | PythonStep | UploadStep) -> None:
    """A step whose output model cannot be known now: the storages it writes are not checked downstream."""
    written = (
        [step.output.storage] if isinstance(step, EtlStep) else step.writes if isinstance(step, PythonStep) else []
    )
    for storage in written:
        checker.sources.pop(storage, None)
        checker.unknown[storage] = step.name
