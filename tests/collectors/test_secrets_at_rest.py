"""Collector credentials: sealed in Postgres, never shown by the API or the CLI, masked in errors and logs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from headrace.platform.processes import free_port
from headrace.secrets import SecretKeyMismatch
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition, CollectorStore
from tests.collectors.conftest import rows_become
from tests.conftest import ADMIN, RunningPlatform

# Every credential the definitions below carry; none may ever come out of Headrace in clear.
DB_PASSWORD = f"dbpw-{uuid.uuid4().hex}"
DSN_PASSWORD = f"dsnpw-{uuid.uuid4().hex}"
HTTP_USER = "reader"
HTTP_PASSWORD = f"httppw-{uuid.uuid4().hex}"
API_KEY = f"apikey-{uuid.uuid4().hex}"
HEADER_KEY = f"header-{uuid.uuid4().hex}"
SECRETS = (DB_PASSWORD, DSN_PASSWORD, HTTP_PASSWORD, API_KEY, HEADER_KEY)
ITEMS = [{"id": i, "name": f"item {i}"} for i in range(1, 4)]


def assert_hidden(text: str) -> None:
    assert [secret for secret in SECRETS if secret in text] == []


@pytest.fixture
async def guarded_api() -> AsyncIterator[str]:
    """A JSON API that answers only with the right Basic auth, `api_key` and X-Api-Key; /broken always fails."""

    async def items(request: web.Request) -> web.Response:
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", "Basic Og=="))
        if (auth.login, auth.password) != (HTTP_USER, HTTP_PASSWORD):
            return web.json_response({"error": "who are you"}, status=401)
        if request.query.get("api_key") != API_KEY or request.headers.get("X-Api-Key") != HEADER_KEY:
            return web.json_response({"error": "bad key"}, status=403)
        return web.json_response({"items": ITEMS})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="upstream exploded")

    app = web.Application()
    app.router.add_get("/items", items)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


def secret_dsn(database_url: str) -> str:
    """The session database's DSN with a password in its userinfo and another in its query (trust auth ignores both)."""
    parts = urlsplit(database_url)
    netloc = f"{parts.username}:{parts.password or DB_PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=f"password={DSN_PASSWORD}&sslmode=disable"))


def http_source(where: str, path: str) -> dict[str, Any]:
    return {
        "kind": "http",
        "url": f"http://{HTTP_USER}:{HTTP_PASSWORD}@{where}/{path}?api_key={API_KEY}",
        "headers": {"X-Api-Key": HEADER_KEY, "Accept": "application/json"},
        "records_path": "items",
    }


async def test_collector_credentials_are_sealed_and_never_shown(
    platform: RunningPlatform,
    pool: asyncpg.Pool,
    database_url: str,
    guarded_api: str,
    source_table: str,
    storage_name: str,
) -> None:
    await pool.execute(f"CREATE TABLE {source_table} (id int PRIMARY KEY, v text)")
    await pool.execute(f"INSERT INTO {source_table} VALUES (1, 'a'), (2, 'b')")
    from_db, from_api = f"{source_table}_db", f"{source_table}_api"
    definitions = [
        {
            "name": from_db,
            "storage": f"{storage_name}_db",
            "source": {"kind": "postgres", "dsn": secret_dsn(database_url), "table": f"public.{source_table}"},
        },
        {"name": from_api, "storage": f"{storage_name}_api", "source": http_source(guarded_api, "items")},
    ]
    base = platform.settings.service_url("ingest") + "/api/collectors"
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        shown: list[str] = []
        for definition in definitions:
            async with session.post(base, json=definition) as response:
                assert response.status == 201, await response.text()
                shown.append(await response.text())
        stored = await pool.fetch(
            "SELECT definition::text AS definition FROM headrace.collectors WHERE name = ANY($1)", [from_db, from_api]
        )
        assert len(stored) == 2 and all("enc:v1:" in row["definition"] for row in stored)
        assert_hidden(" ".join(row["definition"] for row in stored))

        # Still works: the sealed credentials are opened where they are used.
        for name in (from_db, from_api):
            async with session.post(f"{base}/{name}/run?wait=true") as response:
                assert response.status == 200, await response.text()
        await rows_become(pool, f"{storage_name}_db", ("id", "v"), [(1, "a"), (2, "b")])
        await rows_become(pool, f"{storage_name}_api", ("id", "name"), [(i["id"], i["name"]) for i in ITEMS])

        for path in ("", f"/{from_db}", f"/{from_api}"):
            async with session.get(base + path) as response:
                shown.append(await response.text())
    shown += [platform.cli("collector", *args).stdout for args in (("list", "--json"), ("list",))]
    for name in (from_db, from_api):
        shown += [platform.cli("collector", "show", name, *more).stdout for more in ((), ("--json",))]
    assert_hidden("\n".join(shown))

    db = orjson.loads(platform.cli("collector", "show", from_db, "--json").stdout)
    assert db["source"]["dsn"].startswith(f"{urlsplit(database_url).scheme}://postgres:***@127.0.0.1:")
    assert db["source"]["dsn"].endswith("?password=***&sslmode=***")
    api = orjson.loads(platform.cli("collector", "show", from_api, "--json").stdout)
    assert api["source"]["url"] == f"http://***@{guarded_api}/items?api_key=***"
    assert api["source"]["headers"] == {"X-Api-Key": "***", "Accept": "application/json"}


async def test_a_failing_source_with_credentials_in_its_url_shows_them_masked(
    platform: RunningPlatform, pool: asyncpg.Pool, guarded_api: str, storage_name: str
) -> None:
    name = f"{storage_name}_broken"
    base = platform.settings.service_url("ingest") + "/api/collectors"
    definition = {"name": name, "storage": storage_name, "source": http_source(guarded_api, "broken")}
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(base, json=definition) as response:
            assert response.status == 201, await response.text()
        async with session.post(f"{base}/{name}/run?wait=true") as response:
            assert response.status == 502
            error = (await response.json())["error"]
        async with session.get(f"{base}/{name}") as response:
            last_error = (await response.json())["last_error"]
        async with session.get(f"{base}/{name}/batches") as response:
            batches = await response.text()
    masked = f"GET http://{guarded_api}/broken?api_key=*** answered 500: upstream exploded"
    assert masked in error and masked in last_error, (error, last_error)
    stored = await pool.fetchrow(
        "SELECT c.last_error, string_agg(b.error, ' ') AS errors FROM headrace.collectors c"
        " JOIN headrace.collector_batches b ON b.collector_id = c.id WHERE c.name = $1 GROUP BY c.last_error",
        name,
    )
    assert "api_key=***" in stored["errors"]
    assert_hidden(f"{error} {last_error} {batches} {stored['last_error']} {stored['errors']}")
    logs = Path(platform.settings.data_dir) / "logs"
    assert_hidden("\n".join(p.read_text(errors="replace") for p in logs.glob("*.log")))


async def test_a_definition_stored_in_clear_is_sealed_when_first_read(
    settings: Settings, pool: asyncpg.Pool, database_url: str, storage_name: str
) -> None:
    """Rows written before credentials were sealed (SQL cannot seal them: the key is not in the database)."""
    definition = CollectorDefinition.model_validate(
        {
            "name": storage_name,
            "storage": storage_name,
            "source": {"kind": "postgres", "dsn": secret_dsn(database_url), "table": "t"},
        }
    )
    await pool.execute(
        "INSERT INTO headrace.collectors (id, name, definition) VALUES ($1, $2, $3)",
        uuid.uuid4(),
        storage_name,
        definition.model_dump(mode="json"),
    )
    assert (await CollectorStore(pool, settings).get(storage_name)).definition == definition
    stored = await pool.fetchval("SELECT definition::text FROM headrace.collectors WHERE name = $1", storage_name)
    assert "enc:v1:" in stored
    assert_hidden(stored)
    assert (await CollectorStore(pool, settings).get(storage_name)).definition == definition

    elsewhere = CollectorStore(pool, settings.model_copy(update={"secret_key": "not the key it was sealed with"}))
    with pytest.raises(SecretKeyMismatch, match="HEADRACE_SECRET_KEY is not the key it was encrypted with"):
        await elsewhere.get(storage_name)
