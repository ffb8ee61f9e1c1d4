"""A storage's streaming ETL: computed columns, a filter, a column selection and renames, applied per record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headrace.etl.expressions import EvaluationError, FormulaError, Node, evaluate, parse


class Dropped(Exception):
    """The filter left this record out; not an error."""


@dataclass
class EtlConfig:
    """Applied in this order: compute (each formula sees the fields computed before it), filter, select, rename.

    `select` keeps only the listed fields (computed ones included only when listed); an empty selection keeps
    every field. `rename` maps a field name to its new name.
    """

    select: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    filter: str | None = None
    compute: dict[str, str] = field(default_factory=dict)  # new field -> formula, in order

    def __post_init__(self) -> None:
        self._filter: Node | None = parse(self.filter) if self.filter else None
        self._compute: list[tuple[str, Node]] = []
        for name, formula in self.compute.items():
            if not name:
                raise FormulaError("a computed column needs a name")
            try:
                self._compute.append((name, parse(formula)))
            except FormulaError as exc:
                raise FormulaError(f"computed column {name!r}: {exc}") from exc
        targets = list(self.rename.values())
        if len(set(targets)) != len(targets):
            raise FormulaError("two fields renamed to the same name")

    @property
    def is_empty(self) -> bool:
        return not (self.select or self.rename or self.filter or self.compute)

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.select:
            found["select"] = list(self.select)
        if self.rename:
            found["rename"] = dict(self.rename)
        if self.filter:
            found["filter"] = self.filter
        if self.compute:
            found["compute"] = dict(self.compute)
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> EtlConfig:
        data = data or {}
        return cls(
            select=list(data.get("select") or []),
            rename=dict(data.get("rename") or {}),
            filter=data.get("filter") or None,
            compute=dict(data.get("compute") or {}),
        )

    def apply(self, record: dict[str, Any], keep_all: bool = False) -> dict[str, Any]:
        """The record as the storage receives it; raises Dropped (filtered out) or EvaluationError (rejected).

        keep_all (for merge deletes, which carry only the key): no filter and no selection, so the key survives.
        """
        if self.is_empty:
            return record
        out = dict(record)
        for name, node in self._compute:
            try:
                out[name] = evaluate(node, out)
            except EvaluationError as exc:
                raise EvaluationError(f"computed column {name!r}: {exc}") from exc
        if self._filter is not None and not keep_all:
            try:
                keep = evaluate(self._filter, out)
            except EvaluationError as exc:
                raise EvaluationError(f"filter: {exc}") from exc
            if keep is not True:
                raise Dropped
        if self.select and not keep_all:
            out = {k: out[k] for k in self.select if k in out}
        if self.rename:
            out = {self.rename.get(k, k): v for k, v in out.items()}
        return out
