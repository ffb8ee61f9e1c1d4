"""The model of a storage: its ordered columns, how a batch of records changes it, and its Avro form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headrace.models.identifiers import ColumnNamer
from headrace.models.inference import infer_value
from headrace.models.types import ColumnType, fits, widen

OVERFLOW_COLUMN = "_overflow"


@dataclass(frozen=True)
class Column:
    key: str  # the field name as it appears in the data
    name: str  # the Postgres column name
    type: ColumnType

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "name": self.name, "type": self.type.value}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Column:
        return cls(key=data["key"], name=data["name"], type=ColumnType(data["type"]))


@dataclass(frozen=True)
class Misfit:
    """A value that does not fit its column of a locked model."""

    key: str
    column_type: ColumnType
    value_type: ColumnType

    @property
    def reason(self) -> str:
        return (
            f"field {self.key!r}: a {self.value_type.value} value does not fit the locked "
            f"{self.column_type.value} column"
        )


@dataclass
class ModelChange:
    """What a batch does to a model: columns to add and columns to widen."""

    added: list[Column] = field(default_factory=list)
    widened: list[tuple[Column, Column]] = field(default_factory=list)  # (before, after)

    def __bool__(self) -> bool:
        return bool(self.added or self.widened)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [c.to_json() for c in self.added],
            "widened": [{"column": a.key, "from": b.type.value, "to": a.type.value} for b, a in self.widened],
        }


@dataclass
class Model:
    columns: list[Column] = field(default_factory=list)
    version: int = 0
    max_columns: int = 1000

    def __post_init__(self) -> None:
        self.by_key = {c.key: c for c in self.columns}

    def to_json(self) -> list[dict[str, str]]:
        return [c.to_json() for c in self.columns]

    @classmethod
    def from_json(cls, data: list[dict[str, str]], version: int, max_columns: int = 1000) -> Model:
        return cls([Column.from_json(c) for c in data], version=version, max_columns=max_columns)

    def plan(self, records: list[dict[str, Any]], locked: bool = False) -> tuple[ModelChange, dict[int, Misfit]]:
        """How the model must change to hold these records, and which records a locked model refuses.

        The result depends only on the set of values seen, never on their order.
        """
        misfits = self._misfits(records) if locked else {}
        return self._change(_types_seen(records), locked), misfits

    def _misfits(self, records: list[dict[str, Any]]) -> dict[int, Misfit]:
        """The records a locked model refuses, by index, each with its first value that its column cannot hold."""
        misfits: dict[int, Misfit] = {}
        for index, record in enumerate(records):
            misfit = self._misfit(record)
            if misfit is not None:
                misfits[index] = misfit
        return misfits

    def _misfit(self, record: dict[str, Any]) -> Misfit | None:
        for key, value in record.items():
            column = self.by_key.get(key)
            if column is None:
                continue
            value_type = infer_value(value)
            if value_type is not None and not fits(value_type, column.type):  # null fits every column
                return Misfit(key, column.type, value_type)
        return None

    def _change(self, seen: dict[str, ColumnType | None], locked: bool) -> ModelChange:
        """The columns to add for new keys (while there is room) and, unless locked, the columns to widen."""
        change = ModelChange()
        namer = ColumnNamer({c.name for c in self.columns})
        room = self.max_columns - len(self.columns)
        for key in sorted(seen, key=lambda k: (k not in self.by_key, k)):
            incoming = seen[key]
            column = self.by_key.get(key)
            if column is None:
                # A column is only created once a value gives it a type, and only while there is room.
                if incoming is not None and room > 0:
                    change.added.append(Column(key, namer.name_for(key), incoming))
                    room -= 1
            elif not locked:
                target = widen(column.type, incoming)
                if target != column.type:
                    change.widened.append((column, Column(column.key, column.name, target)))
        return change

    def apply(self, change: ModelChange) -> Model:
        widened = {before.key: after for before, after in change.widened}
        columns = [widened.get(c.key, c) for c in self.columns] + change.added
        return Model(columns, version=self.version + 1, max_columns=self.max_columns)


def _types_seen(records: list[dict[str, Any]]) -> dict[str, ColumnType | None]:
    """Each key's type over the records: the widening of its values' types (None while it was only ever null)."""
    seen: dict[str, ColumnType | None] = {}
    for record in records:
        for key, value in record.items():
            incoming = infer_value(value)
            current = seen.get(key)
            if current is not incoming:
                seen[key] = widen(current, incoming)
    return seen
