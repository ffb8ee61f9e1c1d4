"""File collectors and the file import job against a real OpenSSH SFTP server and the moto S3 API server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from headrace.catalog import Catalog
from headrace.filestores import open_store
from headrace.platform.scratch import ScratchS3, ScratchSftp
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition
from ingest.collectors.files import RecordParser, RecordTooLarge, parse_file, source_from_url
from ingest.collectors.runner import CollectorRunner
from ingest.collectors.sources import extractor_for
from tests.collectors.conftest import make_collector, rows_become
from tests.conftest import s3_client
from tests.file_servers import FileServer

# Line and paragraph separators and NEL: text inside JSON strings, never the end of an NDJSON line.
SEPARATED = [
    {"id": 1, "text": "line\u2028separator"},
    {"id": 2, "text": "paragraph\u2029separator", "nel": "next\x85line"},
    {"id": 3, "text": "\u2028\u2029\x85", "more": ["a\u2028", {"b\u2029": "\x85"}]},
    {"id": 4, "text": "ends with a CRLF"},
]
SEPARATED_NDJSON = b"".join(orjson.dumps(r) + (b"\r\n" if r["id"] == 4 else b"\n \t\n") for r in SEPARATED)


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


async def test_a_file_collector_takes_new_files(
    runner: CollectorRunner, settings: Settings, pool: asyncpg.Pool, file_server: FileServer, storage_name: str
) -> None:
    """Incremental by modification time, on SFTP, FTP and FTPS alike (a glob on the file name)."""
    folder = file_server.root / storage_name
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
        source=file_server.fields() | {"pattern": f"{file_server.remote(folder)}/orders_*.csv"},
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


async def test_import_job_from_a_file_server(
    platform: Any, pool: asyncpg.Pool, file_server: FileServer, storage_name: str, tmp_path: Path
) -> None:
    """`headrace storage import` from SFTP (key file), FTP and FTPS (password in the URL, FTPS trusting the server's
    self-signed certificate given as --ca-cert); the password shows nowhere, not even in a failure."""
    csv = file_server.root / f"{storage_name}.csv"
    lines = ["id,label,at,ok"] + [
        f'{i},"line\nbreak {i}",2024-01-0{1 + i % 9}T10:00:00Z,{str(i % 2 == 0).lower()}' for i in range(500)
    ]
    csv.write_text("\n".join(lines) + "\n")
    options = ["--mode", "replace", *file_server.cli_credentials(tmp_path)]
    url = file_server.url(csv, with_password=True)
    result = platform.cli_json("storage", "import", storage_name, "--from", url, *options)
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
    missing = file_server.url(file_server.root / "missing" / "none.csv", with_password=True)
    failed = platform.cli("storage", "import", storage_name, "--from", missing, *options, check=False)
    assert failed.returncode != 0 and "no file matches" in failed.stderr
    assert file_server.secret not in failed.stdout + failed.stderr + orjson.dumps(result).decode()


async def test_import_job_from_s3(
    platform: Any, pool: asyncpg.Pool, s3_server: ScratchS3, bucket: str, storage_name: str
) -> None:
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


@pytest.mark.parametrize("piece", [1, 7, 1024 * 1024])
def test_the_parser_splits_ndjson_on_line_feeds_only(piece: int) -> None:
    """Fed in pieces of any size (cutting lines and UTF-8 sequences), the records come out whole."""
    assert b"\xe2\x80\xa8" in SEPARATED_NDJSON and b"\xc2\x85" in SEPARATED_NDJSON  # raw, not escaped
    parser = RecordParser("ndjson", name="separated.ndjson")
    records = []
    for start in range(0, len(SEPARATED_NDJSON), piece):
        records += parser.feed(SEPARATED_NDJSON[start : start + piece])
    assert records + parser.close() == SEPARATED


def test_the_parser_refuses_a_record_longer_than_its_limit() -> None:
    parser = RecordParser("ndjson", name="endless.ndjson", max_record_bytes=1000)
    assert parser.feed(b'{"a": 1}\n{"b": "') == [{"a": 1}]
    with pytest.raises(RecordTooLarge, match="record 2 is longer than 1000 bytes"):
        parser.feed(b"x" * 1000)


async def test_separators_inside_strings_survive_file_imports_and_collectors(
    settings: Settings,
    pool: asyncpg.Pool,
    s3_server: ScratchS3,
    sftp_server: ScratchSftp,
    bucket: str,
    storage_name: str,
) -> None:
    """Both read files through parse_file: `headrace storage import` and the file collectors' extract."""
    async with s3_client(s3_server) as client:
        await client.put_object(Bucket=bucket, Key="in/separated.ndjson", Body=SEPARATED_NDJSON)
    (sftp_server.root / f"{storage_name}.ndjson").write_bytes(SEPARATED_NDJSON)
    s3 = source_from_url(
        f"s3://{bucket}/in/*.ndjson",
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        format="ndjson",
    )
    async with open_store(s3, settings, pool) as store:
        [file] = await store.list(s3.pattern)
        assert [r async for records in parse_file(store, file.path, "ndjson") for r in records] == SEPARATED
    sftp = sftp_source(sftp_server, f"{sftp_server.root}/{storage_name}.ndjson") | {"format": "ndjson"}
    await make_collector(settings, pool, name=storage_name, storage=storage_name, source=sftp)
    extractor = extractor_for(
        CollectorDefinition.model_validate({"name": storage_name, "storage": storage_name, "source": sftp}),
        settings,
        pool,
    )
    catalog = Catalog(pool)
    batch = await extractor.plan(None)
    assert batch is not None
    storage = await catalog.get(storage_name)
    assert [r async for records in extractor.extract(batch, catalog, storage) for r in records] == SEPARATED


async def test_a_file_batch_lists_its_files_in_a_stable_order(
    settings: Settings, pool: asyncpg.Pool, sftp_server: ScratchSftp, storage_name: str
) -> None:
    """Whatever order the server lists them in: by modified time, then path; the batch records that list."""
    folder = sftp_server.root / storage_name
    folder.mkdir()
    for name, modified in (("c.ndjson", 1_700_000_000), ("a.ndjson", 1_700_000_100), ("b.ndjson", 1_700_000_000)):
        (folder / name).write_text('{"a": 1}\n')
        os.utime(folder / name, (modified, modified))
    source = sftp_source(sftp_server, f"{folder}/*.ndjson") | {"format": "ndjson"}
    extractor = extractor_for(
        CollectorDefinition.model_validate({"name": storage_name, "storage": storage_name, "source": source}),
        settings,
        pool,
    )
    first, second = await extractor.plan(None), await extractor.plan(None)
    assert first is not None and first == second
    assert [Path(f["path"]).name for f in first["files"]] == ["b.ndjson", "c.ndjson", "a.ndjson"]
