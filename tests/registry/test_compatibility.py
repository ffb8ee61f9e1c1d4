"""Avro schema resolution and the compatibility modes, and the Avro form of storage models (no servers)."""

from __future__ import annotations

from typing import Any

import fastavro
import pytest

from headrace.models import Column, ColumnType, Model
from headrace.models.avro import AVRO_NAME, KEY_ATTRIBUTE, field_keys, model_schema
from headrace.registry.compatibility import MODES, can_read, incompatibilities
from headrace.registry.errors import InvalidSchema
from headrace.registry.schemas import parse_avro


def record(*fields: dict[str, Any], name: str = "R", **extra: Any) -> Any:
    return parse_avro({"type": "record", "name": name, "fields": list(fields), **extra}).parsed


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def compatible(mode: str, new: Any, *existing: Any) -> bool:
    return not incompatibilities(mode, new, list(enumerate(existing, start=1)))


OLD = record(field("a", "string"))
ADDED_NO_DEFAULT = record(field("a", "string"), field("b", "int"))
ADDED_WITH_DEFAULT = record(field("a", "string"), field("b", "int", default=0))


@pytest.mark.parametrize(
    ("mode", "new", "expected"),
    [
        ("BACKWARD", ADDED_NO_DEFAULT, False),
        ("FORWARD", ADDED_NO_DEFAULT, True),
        ("FULL", ADDED_NO_DEFAULT, False),
        ("NONE", ADDED_NO_DEFAULT, True),
        ("BACKWARD", ADDED_WITH_DEFAULT, True),
        ("FORWARD", ADDED_WITH_DEFAULT, True),
        ("FULL", ADDED_WITH_DEFAULT, True),
    ],
)
def test_adding_a_field(mode: str, new: Any, expected: bool) -> None:
    assert compatible(mode, new, OLD) is expected


def test_removing_a_field_without_default_breaks_forward_only() -> None:
    new = record()
    assert compatible("BACKWARD", new, OLD)
    assert not compatible("FORWARD", new, OLD)
    assert not compatible("FULL", new, OLD)


def test_transitive_modes_check_every_version() -> None:
    v1 = record(field("f", "string"))
    v2 = record()
    v3 = record(field("f", "int", default=0))
    assert compatible("BACKWARD", v3, v1, v2)
    assert not compatible("BACKWARD_TRANSITIVE", v3, v1, v2)
    assert compatible("FORWARD", v3, v1, v2)
    assert not compatible("FORWARD_TRANSITIVE", v3, v1, v2)
    assert not compatible("FULL_TRANSITIVE", v3, v1, v2)
    assert compatible("NONE", v3, v1, v2)


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
        ("null", "null"),
        ("boolean", "boolean"),
    ],
)
def test_promotions(writer: str, reader: str) -> None:
    assert can_read(record(field("x", reader)), record(field("x", writer))) == []


@pytest.mark.parametrize(("writer", "reader"), [("long", "int"), ("double", "float"), ("string", "int")])
def test_no_narrowing(writer: str, reader: str) -> None:
    problems = can_read(record(field("x", reader)), record(field("x", writer)))
    assert problems and "/fields/0/type" in problems[0]


def test_unions() -> None:
    nullable = record(field("x", ["null", "string"]))
    plain = record(field("x", "string"))
    assert can_read(nullable, plain) == []
    assert can_read(plain, nullable) != []  # the writer's null branch has no reader
    assert can_read(record(field("x", ["null", "long"])), record(field("x", ["null", "int"]))) == []


def test_enums() -> None:
    def enum(*symbols: str, **extra: Any) -> Any:
        return record(field("e", {"type": "enum", "name": "E", "symbols": list(symbols), **extra}))

    assert can_read(enum("A", "B"), enum("A")) == []
    assert can_read(enum("A"), enum("A", "B")) != []
    assert can_read(enum("A", default="A"), enum("A", "B")) == []
    assert can_read(enum("A", "B"), record(field("e", {"type": "enum", "name": "F", "symbols": ["A"]}))) != []


def test_names_fixed_arrays_maps() -> None:
    assert can_read(record(name="A"), record(name="B")) != []
    assert can_read(record(name="A", aliases=["B"]), record(name="B")) == []
    assert can_read(record(name="A", namespace="x"), record(name="A", namespace="y")) == []

    def fixed(size: int, name: str = "F") -> Any:
        return record(field("f", {"type": "fixed", "name": name, "size": size}))

    assert can_read(fixed(4), fixed(4)) == []
    assert can_read(fixed(4), fixed(8)) != []
    assert can_read(fixed(4, "G"), fixed(4)) != []
    assert (
        can_read(
            record(field("a", {"type": "array", "items": "long"})),
            record(field("a", {"type": "array", "items": "int"})),
        )
        == []
    )
    assert (
        can_read(
            record(field("m", {"type": "map", "values": "int"})), record(field("m", {"type": "map", "values": "long"}))
        )
        != []
    )
    assert (
        can_read(
            record(field("a", {"type": "array", "items": "int"})), record(field("a", {"type": "map", "values": "int"}))
        )
        != []
    )


def test_field_aliases_and_recursive_types() -> None:
    assert can_read(record(field("new", "int", aliases=["old"])), record(field("old", "int"))) == []
    linked = record(field("value", "int"), field("next", ["null", "R"]))
    assert can_read(linked, linked) == []


def test_named_type_references_resolve() -> None:
    inner = {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}
    wider = {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "long"}]}
    writer = record(field("a", inner), field("b", "Inner"))
    reader = record(field("a", wider), field("b", "Inner"))
    assert can_read(reader, writer) == []
    assert "a int cannot read a long" in can_read(writer, reader)[0]


def test_every_mode_is_known() -> None:
    assert set(MODES) == {f"{m}{t}" for m in ("BACKWARD", "FORWARD", "FULL") for t in ("", "_TRANSITIVE")} | {"NONE"}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type": "record", "name": "R", "fields": [{"name": "x", "type": "nope"}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "x-y", "type": "int"}]}',
        '{"type": "record", "name": "1R", "fields": []}',
        '{"type": "record", "name": "R", "fields": [{"name": "x", "type": "int", "default": "s"}]}',
        '"Unknown"',
    ],
)
def test_invalid_schemas_are_refused(text: str) -> None:
    with pytest.raises(InvalidSchema):
        parse_avro(text)


def test_same_schema_same_fingerprint_whatever_the_key_order() -> None:
    a = parse_avro('{"type": "record", "name": "R", "fields": []}')
    b = parse_avro('{"fields": [], "name": "R", "type": "record"}')
    c = parse_avro('{"type": "record", "name": "R", "fields": [], "doc": "other"}')
    assert a.fingerprint == b.fingerprint != c.fingerprint


def model(*columns: tuple[str, ColumnType]) -> Model:
    return Model([Column(key, key, column_type) for key, column_type in columns], version=len(columns))


def test_a_model_is_a_record_of_nullable_fields_keeping_its_keys() -> None:
    keys = ["plain", "with space", "9lives", "with space", "é", '"; DROP TABLE x; --', "", "with_space"]
    schema = model_schema("my-storage", model(*[(k, ColumnType.STRING) for k in dict.fromkeys(keys)]))
    fastavro.parse_schema(schema)
    parsed = parse_avro(schema)  # also checks every name against the Avro specification
    assert schema["name"] == "my_storage" and schema["headrace.storage"] == "my-storage"
    names = [f["name"] for f in schema["fields"]]
    assert len(set(names)) == len(names) and all(AVRO_NAME.match(n) for n in names)
    assert [f[KEY_ATTRIBUTE] for f in schema["fields"]] == list(dict.fromkeys(keys))
    assert all(f["type"][0] == "null" and f["default"] is None for f in schema["fields"])
    assert set(field_keys(parsed.parsed).values()) == set(dict.fromkeys(keys))


def test_widening_a_model_by_avro_rules() -> None:
    v1 = parse_avro(model_schema("s", model(("n", ColumnType.INTEGER), ("d", ColumnType.DATE)))).parsed
    v2 = parse_avro(model_schema("s", model(("n", ColumnType.FLOAT), ("d", ColumnType.DATETIME)))).parsed
    v3 = parse_avro(model_schema("s", model(("n", ColumnType.STRING), ("d", ColumnType.DATETIME)))).parsed
    assert compatible("BACKWARD", v2, v1)  # long -> double and int -> long are promotions
    assert not compatible("BACKWARD", v3, v2)  # a double is not readable as a string
