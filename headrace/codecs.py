"""Decodes ingest-topic event values: a JSON object, or Avro in the Confluent wire format via the registry.

The Confluent wire format is a magic byte 0, the writer schema's registry id as 4 big-endian bytes, then
the Avro binary body. A JSON text never starts with a NUL byte, so the first byte tells the two apart.
Avro values come out as JSON values, the form every loader hands to the model: dates and datetimes as
ISO-8601 text, bytes and fixed as base64 text, decimals as text (exact), and fields marked
`headrace.type: json` parsed back from their JSON text. Fields carrying `headrace.key` get that key back.
"""

from __future__ import annotations

import base64
import io
import struct
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import asyncpg
import fastavro
import orjson

from headrace.models.avro import KEY_ATTRIBUTE
from headrace.models.inference import format_datetime
from headrace.registry.errors import SchemaNotFound
from headrace.registry.store import get_schema

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
JSON_TYPE_ATTRIBUTE = "headrace.type"


class UndecodableEvent(ValueError):
    """An event value that is neither a JSON object nor Avro this registry can read; reason says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _ReaderSchema:
    parsed: Any
    keys: dict[str, str]  # Avro field name -> original key
    json_fields: frozenset[str]  # fields whose string is JSON text


def _is_json_text(schema: Any) -> bool:
    branches = schema if isinstance(schema, list) else [schema]
    return any(isinstance(b, dict) and b.get(JSON_TYPE_ATTRIBUTE) == "json" for b in branches)


def _reader_schema(schema_id: int, text: str) -> _ReaderSchema:
    try:
        schema = orjson.loads(text)
        parsed = fastavro.parse_schema(schema)
    except Exception as exc:
        raise UndecodableEvent(f"schema {schema_id} in the registry is not a usable Avro schema: {exc}") from exc
    fields = schema.get("fields", []) if isinstance(schema, dict) and schema.get("type") == "record" else None
    if fields is None:
        raise UndecodableEvent(f"schema {schema_id} is not an Avro record, so its values are not rows")
    keys = {f["name"]: f[KEY_ATTRIBUTE] for f in fields if isinstance(f.get(KEY_ATTRIBUTE), str)}
    json_fields = frozenset(f["name"] for f in fields if _is_json_text(f["type"]))
    return _ReaderSchema(parsed, keys, json_fields)


def to_json_value(value: Any) -> Any:
    """A decoded Avro value as the JSON value it stands for."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, datetime):
        return format_datetime(value) if value.tzinfo else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    return str(value)


def decode_json(value: bytes) -> dict[str, Any]:
    """A JSON object event value as a dict."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UndecodableEvent(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise UndecodableEvent(f"not a JSON object but {type(record).__name__}")
    return record


def encode_confluent(schema_id: int, schema: Any, record: dict[str, Any]) -> bytes:
    """A record as Avro in the Confluent wire format (schema: the writer schema, parsed or as JSON)."""
    body = io.BytesIO()
    body.write(_HEADER.pack(MAGIC_BYTE, schema_id))
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return body.getvalue()


class EventDecoder:
    """Decodes event values; Avro writer schemas are fetched from the registry store by id and cached."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._schemas: dict[int, _ReaderSchema] = {}

    async def decode(self, value: bytes | None) -> dict[str, Any]:
        """The record an event value carries; UndecodableEvent with the reason when there is none."""
        if value is None:
            raise UndecodableEvent("no value (a tombstone)")
        if not value:
            raise UndecodableEvent("empty value")
        if value[0] != MAGIC_BYTE:
            return decode_json(value)
        if len(value) < _HEADER.size:
            raise UndecodableEvent("truncated Confluent wire format: fewer than 5 header bytes")
        _, schema_id = _HEADER.unpack_from(value)
        return self.decode_avro(await self.schema(schema_id), schema_id, memoryview(value)[_HEADER.size :])

    async def schema(self, schema_id: int) -> _ReaderSchema:
        # Ids are immutable, so a schema once found is good forever; a missing one is looked up again next time.
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            async with self.pool.acquire() as conn:
                text, schema_type = await get_schema(conn, schema_id)
        except SchemaNotFound as exc:
            raise UndecodableEvent(f"schema id {schema_id} is not in the schema registry") from exc
        if schema_type != "AVRO":
            raise UndecodableEvent(f"schema id {schema_id} is a {schema_type} schema; only AVRO is decoded")
        reader = self._schemas[schema_id] = _reader_schema(schema_id, text)
        return reader

    @staticmethod
    def decode_avro(reader: _ReaderSchema, schema_id: int, body: memoryview) -> dict[str, Any]:
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, reader.parsed, None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, UnicodeDecodeError...
            reason = f"Avro body does not match schema id {schema_id}: {type(exc).__name__}: {exc}"
            raise UndecodableEvent(reason) from exc
        if stream.tell() != len(body):
            raise UndecodableEvent(
                f"Avro body does not match schema id {schema_id}: {len(body) - stream.tell()} bytes left over"
            )
        assert isinstance(record, dict)  # _reader_schema admits record schemas only
        fields: dict[str, Any] = record
        decoded: dict[str, Any] = {}
        for name, value in fields.items():
            if name in reader.json_fields and isinstance(value, str):
                try:
                    decoded[reader.keys.get(name, name)] = orjson.loads(value)
                    continue
                except orjson.JSONDecodeError:
                    pass
            decoded[reader.keys.get(name, name)] = to_json_value(value)
        return decoded
