"""Every storage model version is registered as subject <storage>-value, one version per model change."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import asyncpg
from confluent_kafka.schema_registry import SchemaRegistryClient

from headrace.catalog import Catalog
from headrace.models.avro import KEY_ATTRIBUTE
from headrace.registry import store
from tests.conftest import ADMIN, TEST_ADMIN_TOKEN, RunningPlatform
from tests.eventually import eventually


def fields_of(schema_text: str) -> list[tuple[str, Any]]:
    """(original key, Avro type of the non-null branch) of each field."""
    return [(f[KEY_ATTRIBUTE], f["type"][1]) for f in json.loads(schema_text)["fields"]]


async def test_catalog_registers_each_model_change(pool: asyncpg.Pool, storage_name: str) -> None:
    catalog = Catalog(pool)
    storage, _ = await catalog.create(storage_name)
    subject = store.storage_subject(storage_name)
    async with pool.acquire() as conn:
        assert subject not in await store.subjects(conn)  # an empty model is no version yet

    for records in ([{"d": "2024-01-05T10:00:00Z", "n": 1, "s": "a"}], [{"d": "not a date", "n": 1.5}]):
        async with pool.acquire() as conn, conn.transaction():
            model = await catalog.model(storage.id, conn)
            change, _ = model.plan(records)
            await catalog.evolve(conn, storage, model, change)

    async with pool.acquire() as conn:
        assert await store.versions(conn, subject) == [1, 2]
        # Widening a datetime to a string is not Avro-compatible; storage subjects say so by their level.
        assert await store.get_config(conn, subject) == "NONE"
        latest = await store.get_version(conn, subject, store.LATEST)
    assert fields_of(latest.schema) == [("d", "string"), ("n", "double"), ("s", "string")]


async def test_pushed_model_changes_are_registered(platform: RunningPlatform, storage_name: str) -> None:
    created = platform.cli_json("storage", "create", storage_name)
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        for version, event in enumerate(
            ({"d": "2024-01-05T10:00:00Z", "n": 1, "s": "a"}, {"d": "not a date", "n": 1.5}), start=1
        ):
            async with session.post(created["push_url"], json=event) as response:
                assert response.status == 200, await response.text()

            async def shown_at(version: int = version) -> dict[str, Any] | None:
                shown = await asyncio.to_thread(platform.cli_json, "storage", "show", storage_name)
                return shown if shown["version"] >= version else None

            shown = await eventually(shown_at, what=f"model version {version}")
            assert shown["version"] == version

    client = SchemaRegistryClient(
        {
            "url": platform.settings.service_url("schema-registry"),
            "basic.auth.user.info": f"headrace:{TEST_ADMIN_TOKEN}",
        }
    )
    subject = f"{storage_name}-value"
    assert subject in client.get_subjects()
    assert client.get_versions(subject) == [1, 2]
    latest = client.get_latest_version(subject)
    types = {"string": "string", "float": "double", "integer": "long", "datetime": "long"}
    expected = [(c["name"], types[c["type"]]) for c in shown["columns"]]
    assert [(key, t if isinstance(t, str) else t["type"]) for key, t in fields_of(latest.schema.schema_str)] == expected
    first = client.get_version(subject, 1)
    assert fields_of(first.schema.schema_str)[0] == ("d", {"type": "long", "logicalType": "timestamp-micros"})
