"""The `headrace` CLI and the Python client are clients of the services' APIs: every command works with only the
services' URLs and the admin token (no database URL, no runtime record), and imports no service or Postgres code."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from headrace.kafka import Topics
from headrace.platform.scratch import ScratchS3
from headrace.settings import RUNTIME_FILE
from headrace.sftp import KnownHosts
from tests.conftest import ADMIN, REPO, RunningPlatform, s3_client
from tests.eventually import eventually
from tests.exporter.conftest import settle

# What a client of the platform must never load: the services, the Postgres driver, the core's Postgres side.
SERVICES = ("asyncpg", "ingest", "exporter", "transform", "schema_registry", "console")
CORE_POSTGRES = ("headrace.postgres", "headrace.catalog")


def test_the_cli_and_the_client_load_no_service_and_no_postgres_code() -> None:
    probe = (
        "import sys, headrace.client, headrace.cli\n"
        "from headrace.cli import collector, etl, export, hostkeys, imports, platform, storage\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {SERVICES!r} or m.startswith({CORE_POSTGRES!r})])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"


def test_the_client_environment_has_no_way_to_postgres(platform: RunningPlatform) -> None:
    env = platform.client_env
    assert not [k for k in env if k in ("HEADRACE_DATABASE_URL", "HEADRACE_KAFKA_BOOTSTRAP")]
    assert not (REPO / env["HEADRACE_DATA_DIR"] / RUNTIME_FILE).exists()


async def push(url: str, *records: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.post(url, json=list(records)) as response:
        assert response.status == 200, await response.text()


async def topic_exists(bootstrap: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return topic in await admin.list_topics()
    finally:
        await admin.close()


async def test_storage_commands(
    platform: RunningPlatform, storage_name: str, s3_server: ScratchS3, bucket: str, pool: asyncpg.Pool
) -> None:
    cli, name = platform.cli_json, storage_name
    created = cli("storage", "create", name, "-k", "id", "--load-mode", "merge")
    await push(created["push_url"], {"id": 1, "n": 1}, {"id": 2, "n": 2})
    assert name in [s["name"] for s in cli("storage", "list")]

    async def two_rows() -> list[dict[str, Any]]:
        rows = cli("storage", "query", name)
        assert len(rows) == 2
        return rows

    await eventually(two_rows)
    assert len(cli("storage", "query", name, "--limit", "1")) == 1
    assert {c["name"] for c in cli("storage", "show", name)["columns"]} == {"id", "n"}
    assert cli("storage", "etl", name, "--compute", "double=n * 2")["compute"] == {"double": "n * 2"}
    assert cli("storage", "etl", name) == {"compute": {"double": "n * 2"}}
    assert cli("storage", "etl", name, "--clear") == {}
    refused = platform.cli("storage", "etl", name, "--compute", "x=exec('rm')", check=False)
    assert refused.returncode == 1 and "compute.x: unknown function 'exec'" in refused.stderr

    assert cli("storage", "lock", name)["locked"] is True
    # A batch is not checked against the model on its way in: transform keeps the misfit as a rejected row.
    async with s3_client(s3_server) as client:
        await client.put_object(Bucket=bucket, Key="in/misfit.ndjson", Body=b'{"id": 3, "n": "three"}\n')
    s3 = ["--endpoint", s3_server.endpoint_url, "--access-key-id", s3_server.access_key_id]
    s3 += ["--secret-access-key", s3_server.secret_access_key]
    imported = cli("storage", "import", name, "--from", f"s3://{bucket}/in/misfit.ndjson", *s3, "--mode", "merge")
    assert imported["rows"] == 1 and imported["load_mode"] == "merge"

    async def rejected() -> list[dict[str, Any]]:
        rows = cli("storage", "rejected", name)
        assert len(rows) == 1
        return rows

    assert (await eventually(rejected))[0]["payload"] == {"id": 3, "n": "three"}
    assert cli("storage", "unlock", name)["locked"] is False
    assert cli("storage", "replay-rejected", name) == {"replayed": 1}
    await eventually(lambda: _count(cli("storage", "query", name), 3))
    assert [v["version"] for v in cli("storage", "history", name)][-1] >= 2
    assert [b["batch_id"] for b in cli("storage", "batches", name)] == [imported["batch_id"]]
    rotated = cli("storage", "rotate-token", name)
    assert rotated["push_url"] != created["push_url"]

    # Deleting asks first; no answer (or no) keeps the storage.
    kept = platform.cli("storage", "delete", name, input="n\n", check=False)
    assert kept.returncode == 1 and "Aborted" in kept.stderr
    assert cli("storage", "show", name)["name"] == name
    deleted = cli("storage", "delete", name, "--yes")
    topic = Topics().ingest(name)
    assert deleted["topic"] == {"name": topic, "deleted": True}
    assert deleted["subject"]["name"] == f"{name}-value" and deleted["subject"]["versions"]
    missing = platform.cli("storage", "show", name, check=False)
    assert missing.returncode == 1 and f"no storage named '{name}'" in missing.stderr
    assert await pool.fetchval("SELECT to_regclass($1)", f'storage."{name}"') is None
    for table in ("push_tokens", "model_versions", "batches", "rejected_rows", "event_ids"):
        left = f"SELECT count(*) FROM headrace.{table} WHERE storage_id = $1::text::uuid"
        assert await pool.fetchval(left, created["id"]) == 0, table
    assert not await topic_exists(platform.settings.kafka_bootstrap or "", topic)
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        registry = platform.settings.service_url("schema-registry")
        async with session.get(f"{registry}/subjects/{name}-value/versions") as response:
            assert response.status == 404

    # A storage of the same name afterwards is a new, empty storage that transform writes to.
    again = cli("storage", "create", name)
    assert again["id"] != created["id"]
    await push(again["push_url"], {"fresh": True})
    await eventually(lambda: _count(cli("storage", "query", name), 1))


async def _count(rows: list[Any], expected: int) -> bool:
    return len(rows) == expected


async def test_collector_and_export_commands(
    platform: RunningPlatform, pool: asyncpg.Pool, database_url: str, storage_name: str, s3_server: ScratchS3,
    bucket: str,
) -> None:  # fmt: skip
    cli, name, table = platform.cli_json, storage_name, f"src_{uuid.uuid4().hex[:10]}"
    await pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    await pool.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    created = cli("collector", "create", table, "--storage", name, "--from", database_url, "--table", table)
    assert created["storage"] == name and created["load_mode"] == "replace"
    assert table in [c["name"] for c in cli("collector", "list")]
    assert cli("collector", "show", table)["extract_mode"] == "snapshot"
    ran = cli("collector", "run", table)
    [batch] = ran["batches"]
    assert batch["rows"] == 2
    assert [b["batch_id"] for b in cli("collector", "batches", table)] == [batch["batch_id"]]
    replayed = cli("collector", "replay", table, batch["batch_id"])
    assert replayed["replay_of"] == batch["batch_id"] and replayed["rows"] == 2
    await eventually(lambda: _count(cli("storage", "query", name), 2))

    export = f"x{name}"
    destination = ["--destination", "s3", "--bucket", bucket, "--endpoint-url", s3_server.endpoint_url]
    destination += ["--access-key-id", "a", "--secret-access-key", "b", "--folder", "cli"]
    assert cli("export", "create", export, "--source", name, *destination, "--no-schedule")["sources"] == [name]
    assert export in [e["name"] for e in cli("export", "list")]
    await settle(pool)
    run = cli("export", "run", export)
    assert run["status"] == "succeeded" and run["rows"] == 2
    regenerated = cli("export", "regenerate", export, "--from", "2020-01-01", "--to", "2099-01-01", "--folder", "r")
    assert regenerated["kind"] == "regenerate"
    assert [r["kind"] for r in cli("export", "show", export, "--runs", "1")["runs"]] == ["regenerate"]

    # The storage is named by both: its deletion is refused, naming them.
    refused = platform.cli("storage", "delete", name, "--yes", check=False)
    assert refused.returncode == 1
    assert f"collector '{table}'" in refused.stderr and f"export '{export}'" in refused.stderr
    assert cli("export", "delete", export) == {"deleted": export}
    assert cli("collector", "delete", table) == {"deleted": table}
    assert cli("storage", "delete", name, "--yes")["deleted"] == name


async def test_sftp_host_key_commands(platform: RunningPlatform, pool: asyncpg.Pool) -> None:
    host = f"h-{uuid.uuid4().hex[:8]}.example"
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr9gJ4Sx1rNXuTf8rFj0Bq9Rk6QmRS+0R0F8hKpU1nq"
    await KnownHosts(pool).record(host, 2222, key)
    listed = [k for k in platform.cli_json("sftp-host-keys", "list") if k["host"] == host]
    assert [(k["port"], k["fingerprint"].startswith("SHA256:")) for k in listed] == [(2222, True)]
    assert host in platform.cli("sftp-host-keys", "list").stdout
    assert "forgotten" in platform.cli("sftp-host-keys", "forget", host, "--port", "2222").stdout
    again = platform.cli("sftp-host-keys", "forget", host, "--port", "2222", check=False)
    assert again.returncode == 1 and f"no host key is recorded for {host}:2222" in again.stderr


def test_the_python_client_finds_the_services_like_the_cli(platform: RunningPlatform, storage_name: str) -> None:
    script = f"""
from headrace.client import Client
from tests.eventually import eventually_sync
with Client() as client:
    storage = client.create_storage({storage_name!r})
    storage.push([{{"id": 1}}, {{"id": 2}}])
    # The storage has no column until transform wrote the first rows.
    eventually_sync(lambda: storage.describe()["columns"] and len(storage.query()) == 2, what="both rows")
    print(len(storage.query()), storage.delete()["deleted"])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env=platform.client_env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", storage_name]


@pytest.mark.parametrize("service, path", [("ingest", "/api/storages/"), ("exporter", "/api/exports/"),
                                           ("schema-registry", "/config/"), ("ingest", "/healthz/")])  # fmt: skip
async def test_routes_answer_with_a_trailing_slash(platform: RunningPlatform, service: str, path: str) -> None:
    url = platform.settings.service_url(service) + path
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=ADMIN, allow_redirects=False) as response:
            assert response.status == 200
        if path != "/healthz/":
            async with session.get(url, allow_redirects=False) as response:
                assert response.status == 401


async def test_invalid_definitions_are_422_with_field_paths_on_every_service(
    platform: RunningPlatform, storage_name: str
) -> None:
    ingest, exporter = platform.settings.service_url("ingest"), platform.settings.service_url("exporter")
    bad_export = {"name": "x", "sources": [], "destination": {"kind": "s3", "bucket": "a-bucket"}}
    bad_collector = {"name": "x", "storage": "y", "source": {"kind": "sftp", "url": "sftp://u@h/x.csv"}}
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        for url, body, path in (
            (f"{exporter}/api/exports", bad_export, ["sources"]),
            (f"{exporter}/api/exports", bad_export | {"sources": ["a"], "csv_separator": "ab"}, ["csv_separator"]),
            (f"{ingest}/api/collectors", bad_collector, ["source", "sftp"]),
            (f"{ingest}/api/storages", {"name": storage_name, "load_mode": "sometimes"}, ["load_mode"]),
        ):
            async with session.post(url, json=body) as response:
                answer = await response.json()
                assert response.status == 422, answer
                assert answer["errors"][0]["path"] == path and answer["error"].startswith(".".join(path))
        async with session.post(f"{ingest}/api/storages", data=b"{", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "malformed JSON" in (await r.json())["error"]


async def test_a_job_answers_202_and_reports_its_progress_then_its_result(
    platform: RunningPlatform, storage_name: str, s3_server: ScratchS3, bucket: str
) -> None:
    from headrace.client import Client, HeadraceError

    body = b"id,label\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(20_000))
    async with s3_client(s3_server) as client:
        await client.put_object(Bucket=bucket, Key="big.csv", Body=body)
    source = {
        "kind": "s3", "url": f"s3://{bucket}/big.csv", "endpoint_url": s3_server.endpoint_url,
        "access_key_id": s3_server.access_key_id, "secret_access_key": s3_server.secret_access_key,
    }  # fmt: skip
    path = f"/api/storages/{storage_name}/imports"
    with Client(**_client_urls(platform)) as client:
        started = client.request("POST", path, json={"source": source})
        assert set(started) == {"job", "url"} and started["url"] == f"/api/jobs/{started['job']}"
        seen: list[dict[str, Any]] = []
        result = client.follow(started, "ingest", seen.append)
        assert result["rows"] == 20_000 and result["storage"] == storage_name
        assert seen[-1] == {"done": len(body), "total": len(body), "unit": "bytes"}
        job = client.request("GET", started["url"])
        assert job["state"] == "succeeded" and job["kind"] == "import" and job["result"] == result
        # The same job form on the exporter answers for ingest's jobs too: jobs live in Postgres.
        assert client.request("GET", started["url"], service="exporter")["id"] == started["job"]

        # ?wait=true: the answer the route gave before jobs, here an error with its status.
        missing = {"source": source | {"url": f"s3://{bucket}/nothing-*.csv"}}
        with pytest.raises(HeadraceError) as waited:
            client.request("POST", path + "?wait=true", json=missing)
        assert waited.value.status == 502 and "no file matches" in waited.value.reason
        with pytest.raises(HeadraceError) as followed:
            client.run_job(path, json=missing)
        assert followed.value.status == 502 and followed.value.body["details"]["batch_id"]
        with pytest.raises(HeadraceError) as unknown:
            client.request("GET", f"/api/jobs/{uuid.uuid4()}")
        assert unknown.value.status == 404


def _client_urls(platform: RunningPlatform) -> dict[str, str]:
    env = platform.client_env
    return {
        "url": env["HEADRACE_INGEST_URL"],
        "exporter_url": env["HEADRACE_EXPORTER_URL"],
        "admin_token": env["HEADRACE_ADMIN_TOKEN"],
    }


def test_cli_errors_are_one_line(platform: RunningPlatform) -> None:
    done = platform.cli("export", "show", "no-such-export", check=False)
    assert done.returncode == 1 and done.stderr.strip() == "Error: no export named 'no-such-export'"
    env = platform.client_env | {"HEADRACE_EXPORTER_URL": "http://127.0.0.1:9"}
    away = subprocess.run(
        [sys.executable, "-m", "headrace", "export", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert away.returncode == 1 and "cannot reach exporter at http://127.0.0.1:9" in away.stderr
    assert orjson.loads(platform.cli("storage", "list", "--json").stdout) is not None
