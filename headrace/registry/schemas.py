"""Parses and checks schema text submitted to the registry, and gives it a fingerprint for id reuse."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

from headrace.models.avro import AVRO_NAME
from headrace.registry.errors import InvalidSchema

SUPPORTED_TYPES = ("AVRO",)
PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


@dataclass(frozen=True)
class ParsedSchema:
    text: str  # compact JSON, as stored and served
    parsed: dict[str, Any] | list[Any] | str  # fastavro's parsed form: full names, named types resolvable
    fingerprint: bytes  # same schema, same fingerprint: the registry gives it the same id

    @property
    def json(self) -> Any:
        return orjson.loads(self.text)


def _fingerprint(schema: Any) -> bytes:
    # Sorted keys make the fingerprint blind to attribute order; defaults and custom attributes are
    # kept (unlike Avro's parsing canonical form), because two schemas that differ in a default do
    # not resolve the same way and must not share an id.
    return hashlib.sha256(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).digest()


def _check_names(schema: Any, path: str = "") -> None:
    """What fastavro lets pass but the Avro specification does not: bad names, records without fields."""
    if isinstance(schema, list):
        for index, branch in enumerate(schema):
            _check_names(branch, f"{path}/{index}")
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        _check_full_name(schema, path)
    if kind in ("record", "error"):
        _check_fields(schema, path)
    elif kind == "enum":
        _check_symbols(schema, path)
    elif kind == "array":
        _check_names(schema.get("items"), f"{path}/items")
    elif kind == "map":
        _check_names(schema.get("values"), f"{path}/values")
    elif isinstance(kind, (dict, list)):
        _check_names(kind, f"{path}/type")


def _check_full_name(schema: dict[str, Any], path: str) -> None:
    for part in str(schema.get("name", "")).split("."):
        if not AVRO_NAME.match(part):
            raise InvalidSchema(f"invalid Avro name {schema.get('name')!r} at {path or '/'}")


def _check_fields(record: dict[str, Any], path: str) -> None:
    if not isinstance(record.get("fields"), list):
        raise InvalidSchema(f"invalid Avro schema: the record at {path or '/'} has no list of fields")
    for index, field in enumerate(record["fields"]):
        if not AVRO_NAME.match(str(field.get("name", ""))):
            raise InvalidSchema(f"invalid Avro field name {field.get('name')!r} at {path}/fields/{index}")
        _check_names(field.get("type"), f"{path}/fields/{index}/type")


def _check_symbols(enum: dict[str, Any], path: str) -> None:
    for symbol in enum.get("symbols", ()):
        if not AVRO_NAME.match(str(symbol)):
            raise InvalidSchema(f"invalid Avro enum symbol {symbol!r} at {path or '/'}")


def parse_avro(source: str | dict[str, Any] | list[Any]) -> ParsedSchema:
    """Parse an Avro schema given as JSON text or as its JSON value; InvalidSchema says what is wrong."""
    if isinstance(source, str):
        try:
            schema = orjson.loads(source)
        except orjson.JSONDecodeError as exc:
            raise InvalidSchema(f"invalid Avro schema: not JSON ({exc})") from exc
    else:
        schema = source
    if isinstance(schema, str) and schema not in PRIMITIVES:
        raise InvalidSchema(f"invalid Avro schema: unknown type {schema!r}")
    try:
        parsed = fastavro.parse_schema(schema, _write_hint=False, _force=True)
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, KeyError, TypeError...
        raise InvalidSchema(f"invalid Avro schema: {type(exc).__name__}: {exc}") from exc
    _check_names(schema)
    return ParsedSchema(text=orjson.dumps(schema).decode(), parsed=parsed, fingerprint=_fingerprint(schema))


def parse_schema_request(body: Any) -> tuple[ParsedSchema, str]:
    """The schema of a register, look-up or compatibility request body, and its schema type."""
    if not isinstance(body, dict):
        raise InvalidSchema("the request body must be a JSON object with a 'schema' field")
    schema_type = body.get("schemaType") or "AVRO"
    if schema_type not in SUPPORTED_TYPES:
        raise InvalidSchema(f"schemaType {schema_type!r} is not supported: this registry holds AVRO schemas only")
    if body.get("references"):
        raise InvalidSchema("schema references are not supported by this registry")
    text = body.get("schema")
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchema("the request body has no 'schema' string")
    return parse_avro(text), schema_type
