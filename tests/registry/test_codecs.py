"""Ingest-topic values decoded: JSON objects, and Avro in the Confluent wire format by schema id."""

from __future__ import annotations

import asyncio
import json
import struct
from datetime import UTC, date, datetime

import asyncpg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headrace.codecs import EventDecoder, UndecodableEvent, encode_confluent
from headrace.models import Column, ColumnType, Model
from headrace.models.avro import model_schema
from headrace.registry.store import register_storage_model
from tests.conftest import TEST_ADMIN_TOKEN


async def test_json_objects(pool: asyncpg.Pool) -> None:
    decoder = EventDecoder(pool)
    assert await decoder.decode(b'{"a": 1, "b": [true]}') == {"a": 1, "b": [True]}
    for value, reason in [
        (b"[1, 2]", "not a JSON object but list"),
        (b"{oops", "not JSON"),
        (None, "tombstone"),
        (b"", "empty value"),
        (b"\x00\x00\x01", "truncated Confluent wire format"),
    ]:
        with pytest.raises(UndecodableEvent, match=reason):
            await decoder.decode(value)


async def test_avro_of_a_storage_model_comes_back_with_its_keys(pool: asyncpg.Pool, storage_name: str) -> None:
    model = Model(
        [
            Column("when", "when", ColumnType.DATETIME),
            Column("day", "day", ColumnType.DATE),
            Column("n n", "n n", ColumnType.INTEGER),
            Column("x", "x", ColumnType.FLOAT),
            Column("ok", "ok", ColumnType.BOOLEAN),
            Column("text", "text", ColumnType.STRING),
            Column("doc", "doc", ColumnType.JSON),
        ],
        version=1,
    )
    async with pool.acquire() as conn, conn.transaction():
        schema_id, version = await register_storage_model(conn, storage_name, model)
    assert version == 1
    record = {
        "when": datetime(2024, 1, 5, 10, 0, tzinfo=UTC),
        "day": date(2024, 1, 5),
        "n_n": 7,
        "x": 1.5,
        "ok": True,
        "text": None,
        "doc": '{"nested": [1, 2]}',
    }
    value = encode_confluent(schema_id, model_schema(storage_name, model), record)
    assert value[:5] == struct.pack(">bI", 0, schema_id)

    decoder = EventDecoder(pool)
    assert await decoder.decode(value) == {
        "when": "2024-01-05T10:00:00Z",
        "day": "2024-01-05",
        "n n": 7,
        "x": 1.5,
        "ok": True,
        "text": None,
        "doc": {"nested": [1, 2]},
    }
    with pytest.raises(UndecodableEvent, match="does not match schema id"):
        await decoder.decode(value[:-3])
    with pytest.raises(UndecodableEvent, match="bytes left over"):
        await decoder.decode(value + b"\x00\x00")


async def test_unknown_schema_id(pool: asyncpg.Pool) -> None:
    with pytest.raises(UndecodableEvent, match="not in the schema registry"):
        await EventDecoder(pool).decode(struct.pack(">bI", 0, 2_000_000_001) + b"\x02")


async def test_values_from_confluents_own_serializer(pool: asyncpg.Pool, registry_url: str, storage_name: str) -> None:
    fields = [{"name": "page", "type": "string"}, {"name": "n", "type": "long"}]
    schema = json.dumps({"type": "record", "name": "Click", "fields": fields})

    def serialize() -> bytes:
        client = SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": f"headrace:{TEST_ADMIN_TOKEN}"})
        serializer = AvroSerializer(client, schema)
        return serializer({"page": "/home", "n": 3}, SerializationContext(storage_name, MessageField.VALUE))

    value = await asyncio.to_thread(serialize)
    assert await EventDecoder(pool).decode(value) == {"page": "/home", "n": 3}
