"""Schema compatibility by Avro's schema-resolution rules, and the registry's compatibility modes.

`can_read(reader, writer)` lists why data written with `writer` cannot be read with `reader` (empty:
it can). The rules are the specification's: primitives match or promote (int to long, float or double;
long to float or double; float to double; string and bytes both ways); a writer union is readable when
each of its branches is; a reader union reads a writer type when one of its branches does; records match
by name (or reader alias), reader fields absent from the writer need a default, writer fields absent from
the reader are skipped; enums match by name and every writer symbol must be a reader symbol unless the
reader has a default; fixed types match by name and size; arrays and maps by their items and values.
Logical types are ignored, as they are by Avro's own resolution.

Modes, for a new schema against the subject's existing versions: BACKWARD (the new schema reads data
written with the latest), FORWARD (the latest reads data written with the new), FULL (both), their
_TRANSITIVE forms (against every version, not only the latest) and NONE (no check).
"""

from __future__ import annotations

from typing import Any

BACKWARD = "BACKWARD"
FORWARD = "FORWARD"
FULL = "FULL"
NONE = "NONE"
MODES = (BACKWARD, f"{BACKWARD}_TRANSITIVE", FORWARD, f"{FORWARD}_TRANSITIVE", FULL, f"{FULL}_TRANSITIVE", NONE)
DEFAULT_MODE = BACKWARD

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_NAMED = frozenset(("record", "error", "enum", "fixed"))
# writer type -> reader types that read it
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _collect_names(schema: Any, names: dict[str, Any]) -> dict[str, Any]:
    """Full name -> definition of every named type in a fastavro-parsed schema."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            names[schema["name"]] = schema
        if kind in ("record", "error"):
            for field in schema.get("fields", ()):
                _collect_names(field["type"], names)
        elif kind == "array":
            _collect_names(schema["items"], names)
        elif kind == "map":
            _collect_names(schema["values"], names)
        elif isinstance(kind, (dict, list)):
            _collect_names(kind, names)
    return names


def _unqualified(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Resolver:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader_names = _collect_names(reader, {})
        self.writer_names = _collect_names(writer, {})
        # Recursive types would recurse forever; a pair already under check is taken as compatible there.
        self.seen: set[tuple[int, int]] = set()

    @staticmethod
    def _resolve(schema: Any, names: dict[str, Any]) -> Any:
        while True:
            if isinstance(schema, str):
                return names.get(schema, schema)
            if isinstance(schema, dict) and not isinstance(schema.get("type"), str):
                schema = schema["type"]
                continue
            if isinstance(schema, dict) and schema["type"] in _PRIMITIVES:
                return schema["type"]  # a logical type reads as its underlying type
            return schema

    @staticmethod
    def _kind(schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, str):
            return schema
        return "record" if schema["type"] == "error" else schema["type"]

    @staticmethod
    def _same_name(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        if _unqualified(reader["name"]) == _unqualified(writer["name"]):
            return True
        aliases = reader.get("aliases") or ()
        return writer["name"] in aliases or _unqualified(writer["name"]) in {_unqualified(a) for a in aliases}

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        reader = self._resolve(reader, self.reader_names)
        writer = self._resolve(writer, self.writer_names)
        if isinstance(writer, list):
            problems: list[str] = []
            for index, branch in enumerate(writer):
                problems += self.check(reader, branch, f"{path}/{index}")
            return problems
        if isinstance(reader, list):
            if any(not self.check(branch, writer, path) for branch in reader):
                return []
            return [f"{path or '/'}: the reader's union has no branch that reads the writer's {self._kind(writer)}"]
        return self._check_kinds(reader, writer, path)

    def _check_kinds(self, reader: Any, writer: Any, path: str) -> list[str]:
        """Two schemas that are no unions: a promotion, a primitive, or the same container or named type."""
        reader_kind, writer_kind = self._kind(reader), self._kind(writer)
        if reader_kind != writer_kind:
            if reader_kind in _PROMOTIONS.get(writer_kind, ()):
                return []
            return [f"{path or '/'}: a {reader_kind} cannot read a {writer_kind}"]
        if reader_kind in _PRIMITIVES:
            return []
        if reader_kind == "array":
            return self.check(reader["items"], writer["items"], f"{path}/items")
        if reader_kind == "map":
            return self.check(reader["values"], writer["values"], f"{path}/values")
        return self._check_named(reader, writer, reader_kind, path)

    def _check_named(self, reader: dict[str, Any], writer: dict[str, Any], reader_kind: str, path: str) -> list[str]:
        """A record, enum or fixed: the same name (or one of the reader's aliases), then what the kind asks."""
        if not self._same_name(reader, writer):
            return [f"{path or '/'}: the reader's {reader_kind} {reader['name']} is not the writer's {writer['name']}"]
        if reader_kind == "fixed":
            if reader["size"] != writer["size"]:
                return [f"{path or '/'}: fixed size {reader['size']} cannot read fixed size {writer['size']}"]
            return []
        if reader_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return [f"{path or '/'}: the reader's enum {reader['name']} lacks the writer's symbols {missing}"]
            return []
        return self._check_record(reader, writer, path)

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        pair = (id(reader), id(writer))
        if pair in self.seen:
            return []
        self.seen.add(pair)
        writer_fields = {f["name"]: f for f in writer.get("fields", ())}
        problems: list[str] = []
        for index, field in enumerate(reader.get("fields", ())):
            written = writer_fields.get(field["name"])
            if written is None:
                written = next((writer_fields[a] for a in field.get("aliases") or () if a in writer_fields), None)
            if written is not None:
                problems += self.check(field["type"], written["type"], f"{path}/fields/{index}/type")
            elif "default" not in field:
                problems.append(
                    f"{path}/fields/{index}: the reader's field {field['name']!r} has no default"
                    " and the writer does not have it"
                )
        return problems


def can_read(reader: Any, writer: Any) -> list[str]:
    """Why data written with `writer` cannot be read with `reader` (both fastavro-parsed); empty if it can."""
    return _Resolver(reader, writer).check(reader, writer, "")


def incompatibilities(mode: str, new: Any, existing: list[tuple[int, Any]]) -> list[str]:
    """Why the new schema breaks the mode against existing (version, schema) pairs, oldest first; empty if not."""
    if mode == NONE or not existing:
        return []
    targets = existing if mode.endswith("_TRANSITIVE") else existing[-1:]
    problems: list[str] = []
    for version, old in targets:
        if mode.startswith((BACKWARD, FULL)):
            problems += [f"reading version {version}'s data with the new schema: {p}" for p in can_read(new, old)]
        if mode.startswith((FORWARD, FULL)):
            problems += [f"reading the new schema's data with version {version}: {p}" for p in can_read(old, new)]
    return problems
