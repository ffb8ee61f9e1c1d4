"""File collectors and the file import job against a real OpenSSH SFTP server and the moto S3 API server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from headrace.platform.scratch import ScratchS3, ScratchSftp
from headrace.settings import Settings
from ingest.collectors.runner import CollectorRunner
from tests.collectors.conftest import make_collector, rows_become
from tests.conftest import s3_client


def sftp_source(server: ScratchSftp, pattern: str) -> dict[str, Any]:
    return {
        "kind": "sftp",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "private_key": server.client_key,
        "host_key": server.host_public_key,
        "pattern": pattern,
    }


async def test_sftp_collector_takes_new_files(
    runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, sftp_server: ScratchSftp, storage_name: str
) -> None:
    folder = sftp_server.root / storage_name
    folder.mkdir()
    first = folder / "orders_2024-01-01.csv"
    first.write_text('id,shop,amount\n1,north,10\n2,"south, east",5.5\n')
    os.utime(first, (1_700_000_000, 1_700_000_000))
    name = await make_collector(
        settings,
        pool,
        name=storage_name,
        storage=storage_name,
        extract_mode="incremental-appends",
        source=sftp_source(sftp_server, f"{folder}/orders_*.csv"),
    )
    assert [b["rows"] for b in (await runner.run(name))["batches"]] == [2]
    second = folder / "orders_2024-01-02.csv"
    second.write_text("id,shop,amount\n3,west,1\n")
    os.utime(second, (1_700_000_100, 1_700_000_100))
    (folder / "notes.txt").write_text("not matched")
    assert [b["rows"] for b in (await runner.run(name))["batches"]] == [1]
    assert (await runner.run(name))["batches"] == []
    await rows_become(
        pool, storage_name, ("id", "shop", "amount"), [(1, "north", 10.0), (2, "south, east", 5.5), (3, "west", 1.0)]
    )


async def test_s3_snapshot_collector_replaces_with_every_file(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    s3_server: ScratchS3,
    bucket: str,
    storage_name: str,
) -> None:
    async with s3_client(s3_server) as client:
        for day, rows in (("01", [{"id": 1, "v": "a"}]), ("02", [{"id": 2, "v": "b"}, {"id": 3, "v": None}])):
            body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
            await client.put_object(Bucket=bucket, Key=f"exports/day={day}/part.ndjson", Body=body)
    name = await make_collector(
        settings,
        pool,
        name=storage_name,
        storage=storage_name,
        source={
            "kind": "s3",
            "bucket": bucket,
            "pattern": "exports/*/part.ndjson",
            "format": "ndjson",
            "endpoint_url": s3_server.endpoint_url,
            "access_key_id": s3_server.access_key_id,
            "secret_access_key": s3_server.secret_access_key,
        },
    )
    await runner.run(name)
    await rows_become(pool, storage_name, ("id", "v"), [(1, "a"), (2, "b"), (3, None)])
    async with s3_client(s3_server) as client:
        await client.delete_object(Bucket=bucket, Key="exports/day=01/part.ndjson")
    await runner.run(name)
    await rows_become(pool, storage_name, ("id", "v"), [(2, "b"), (3, None)])


async def test_import_job_from_sftp_and_s3(
    platform: Any,
    pool: asyncpg.Pool,
    sftp_server: ScratchSftp,
    s3_server: ScratchS3,
    bucket: str,
    storage_name: str,
    tmp_path: Path,
) -> None:
    csv = sftp_server.root / f"{storage_name}.csv"
    lines = ["id,label,at,ok"] + [
        f'{i},"line\nbreak {i}",2024-01-0{1 + i % 9}T10:00:00Z,{str(i % 2 == 0).lower()}' for i in range(500)
    ]
    csv.write_text("\n".join(lines) + "\n")
    server = sftp_server
    result = platform.cli_json(
        "storage",
        "import",
        storage_name,
        "--from",
        f"sftp://{server.user}@{server.host}:{server.port}{csv}",
        "--key",
        str(server.client_key_path),
        "--mode",
        "replace",
    )
    assert result["rows"] == 500 and result["load_mode"] == "replace"
    await rows_become(
        pool, storage_name, ("id", "label", "ok"), [(i, f"line\nbreak {i}", i % 2 == 0) for i in range(500)]
    )
    described = platform.cli_json("storage", "show", storage_name)
    assert {c["name"]: c["type"] for c in described["columns"]} == {
        "id": "integer",
        "label": "string",
        "at": "datetime",
        "ok": "boolean",
    }

    async with s3_client(s3_server) as client:
        await client.put_object(Bucket=bucket, Key="in/more.csv", Body=b"id,label\n1000,from s3\n")
    env_keys = ["--access-key-id", s3_server.access_key_id, "--secret-access-key", s3_server.secret_access_key]
    result = platform.cli_json(
        "storage",
        "import",
        storage_name,
        "--from",
        f"s3://{bucket}/in/more.csv",
        "--endpoint",
        s3_server.endpoint_url,
        *env_keys,
        "--mode",
        "replace",
    )
    assert result["rows"] == 1
    await rows_become(pool, storage_name, ("id", "label"), [(1000, "from s3")])
