"""Export credentials: sealed in Postgres, never shown, still used; destinations only where the policy allows."""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import pytest

from exporter.definitions import ExportDefinition, ExportStore
from exporter.runs import ExportRunner
from headrace.outbound import OutboundRefused
from headrace.platform.scratch import ScratchS3, ScratchSftp
from headrace.settings import Settings
from headrace.sftp import KnownHosts
from tests.conftest import ADMIN, RunningPlatform
from tests.exporter.conftest import StorageTable, create_export, settle
from tests.exporter.test_s3_runs import SEED_ROWS


async def test_export_credentials_are_sealed_and_the_export_still_runs(
    platform: RunningPlatform,
    pool: asyncpg.Pool,
    table: StorageTable,
    s3_server: ScratchS3,
    bucket: str,
    settings: Settings,
) -> None:
    secrets = (f"s3-secret-{uuid.uuid4().hex}", f"s3-token-{uuid.uuid4().hex}")
    name = f"sealed{table.name[2:]}"
    body = {
        "name": name,
        "sources": [table.name],
        "scheduled": False,
        "format": "ndjson",
        "destination": {
            "kind": "s3",
            "bucket": bucket,
            "folder": "sealed",
            "endpoint_url": s3_server.endpoint_url,
            "access_key_id": s3_server.access_key_id,
            "secret_access_key": secrets[0],  # moto takes any secret
            "session_token": secrets[1],
        },
    }
    base = platform.settings.service_url("exporter") + "/api/exports"
    shown: list[str] = []
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.post(base, json=body) as response:
            assert response.status == 201, await response.text()
            shown.append(await response.text())
        stored = await pool.fetchval("SELECT definition::text FROM headrace.exports WHERE name = $1", name)
        assert "enc:v1:" in stored and not [s for s in secrets if s in stored]

        await table.insert(SEED_ROWS)
        await settle(pool)
        async with http.post(f"{base}/{name}/runs?wait=true") as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["rows"] == len(SEED_ROWS)
        for path in ("", f"/{name}", f"/{name}/runs"):
            async with http.get(base + path) as response:
                shown.append(await response.text())
    shown += [
        platform.cli("export", *args).stdout for args in (("list", "--json"), ("show", name), ("show", name, "--json"))
    ]
    assert not [s for s in secrets if s in "\n".join(shown)]
    assert '"secret_access_key": "***"' in shown[-1] and '"session_token": "***"' in shown[-1]

    # Changed as a user would: what `show` gave, edited, sent back. The masked credentials stay as they were.
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.get(f"{base}/{name}") as response:
            edited = {k: v for k, v in (await response.json()).items() if k not in ("id", "created_at")}
        edited["format"] = "csv"
        edited["destination"]["folder"] = "changed"
        async with http.put(f"{base}/{name}", json=edited) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["destination"]["secret_access_key"] == "***"
    changed = (await ExportStore(pool, settings).get(name)).definition
    assert (changed.format, changed.destination.folder) == ("csv", "changed")
    assert (changed.destination.secret_access_key, changed.destination.session_token) == secrets


async def test_an_sftp_export_trusts_its_host_on_first_use(
    runner: ExportRunner, store: ExportStore, pool: asyncpg.Pool, table: StorageTable, sftp_server: ScratchSftp
) -> None:
    known = KnownHosts(pool)
    await known.forget("localhost", sftp_server.port)
    folder = sftp_server.root / f"tofu-{table.name}"
    folder.mkdir()
    destination = {
        "kind": "sftp",
        "host": "localhost",
        "port": sftp_server.port,
        "user": sftp_server.user,
        "private_key": sftp_server.client_key,
        "folder": str(folder),
    }
    export = await create_export(store, sources=[table.name], destination=destination)
    stored = await pool.fetchval("SELECT definition::text FROM headrace.exports WHERE id = $1", export.id)
    assert "PRIVATE KEY" not in stored and "enc:v1:" in stored
    await table.insert(SEED_ROWS)
    try:
        assert (await runner.run(export)).rows == len(SEED_ROWS)
        recorded = await known.get("localhost", sftp_server.port)
        assert recorded is not None and recorded["public_key"].split()[1] == sftp_server.host_public_key.split()[1]
    finally:
        await known.forget("localhost", sftp_server.port)


async def test_an_internal_destination_is_refused_unless_allowed(
    platform: RunningPlatform, settings: Settings, pool: asyncpg.Pool, table: StorageTable
) -> None:
    closed = ExportStore(pool, settings.model_copy(update={"outbound_allow": ""}))
    sftp = {"kind": "sftp", "host": "127.0.0.1", "user": "u", "password": "pw"}
    definition = ExportDefinition.model_validate(
        {"name": f"x{table.name}", "sources": [table.name], "destination": sftp}
    )
    with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
        await closed.create(definition)
    body = {
        "name": f"y{table.name}",
        "sources": [table.name],
        "destination": {"kind": "s3", "bucket": "bucket", "endpoint_url": "http://169.254.169.254/"},
    }
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.post(platform.settings.service_url("exporter") + "/api/exports", json=body) as response:
            # The exporter's API answers a refused definition as it answers any invalid one.
            assert response.status == 422 and "link-local" in (await response.json())["error"]
