"""Exporter fixtures: a real S3 API server (moto), a real OpenSSH SFTP server, and storages filled with plain SQL."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from exporter.definitions import Export, ExportDefinition, ExportStore, S3Destination, SftpDestination
from exporter.runs import ExportRunner
from headrace.catalog import Catalog, Storage
from headrace.models.inference import convert
from headrace.platform.scratch import ScratchS3, ScratchSftp
from headrace.postgres import quote_ident
from headrace.settings import Settings
from tests.conftest import s3_client
from tests.eventually import eventually

RECEIVED_AT = datetime(2021, 4, 8, 12, tzinfo=UTC)


async def s3_objects(server: ScratchS3, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, by key."""
    found: dict[str, bytes] = {}
    async with s3_client(server) as client:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = await client.get_object(Bucket=bucket, Key=item["Key"])
                found[item["Key"]] = await body["Body"].read()
    return found


def s3_destination(server: ScratchS3, bucket: str, folder: str = "myFolder") -> S3Destination:
    return S3Destination(
        bucket=bucket,
        folder=folder,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )


def sftp_destination(server: ScratchSftp, folder: Path) -> SftpDestination:
    folder.mkdir(parents=True, exist_ok=True)
    return SftpDestination(
        host=server.host,
        port=server.port,
        user=server.user,
        private_key=server.client_key,
        host_key=server.host_public_key,
        folder=str(folder),
    )


def gunzip(data: bytes) -> bytes:
    return gzip.decompress(data)


async def settle(pool: asyncpg.Pool) -> None:
    """Wait until every transaction begun so far has ended, so the next run's horizon passes every row written.

    Transaction ids are shared by the whole Postgres server: another session's open transaction (another test
    suite on the same server) holds every export's horizon back until it ends.
    """
    async with pool.acquire() as conn:
        mark = await conn.fetchval("SELECT pg_current_xact_id()::text")  # a transaction of its own, committed
        query = "SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::text::xid8"
        await eventually(lambda: conn.fetchval(query, mark), what="every earlier transaction ended", interval=0.05)


class SettlingRunner(ExportRunner):
    """A runner whose live runs first wait for the horizon to pass what the test wrote (settle=False: not)."""

    async def run(self, *args: Any, settle_first: bool = True, **kwargs: Any) -> Any:
        if settle_first:
            await settle(self.pool)
        return await super().run(*args, **kwargs)


@pytest.fixture
async def runner(settings: Settings, pool: asyncpg.Pool) -> ExportRunner:
    return SettlingRunner(settings, pool)


@pytest.fixture
async def store(pool: asyncpg.Pool, settings: Settings) -> ExportStore:
    return ExportStore(pool, settings)


class StorageTable:
    """A storage filled the way transform fills one (a model change, then rows), with plain SQL.

    Transform is not needed (nor used): the exporter only reads the table, by the transactions that wrote it.
    """

    def __init__(self, pool: asyncpg.Pool, storage: Storage) -> None:
        self.pool = pool
        self.catalog = Catalog(pool)
        self.storage = storage
        self.name = storage.name

    async def evolve(self, rows: list[dict[str, Any]]) -> None:
        """Widen and add columns for these rows, in a transaction of its own (as transform does before writing)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM headrace.storages WHERE id = $1 FOR UPDATE", self.storage.id)
            model = await self.catalog.model(self.storage.id, conn)
            change, _ = model.plan(rows)
            if change:
                await self.catalog.evolve(conn, self.storage, model, change)

    async def insert(self, rows: list[dict[str, Any]], conn: asyncpg.Connection | None = None) -> None:
        """Evolve the model, then insert the rows: in `conn` (an open transaction) when given, else committed now."""
        await self.evolve([{k: v for k, v in r.items() if k != "_event_id"} for r in rows])
        model = await self.catalog.model(self.storage.id)
        for row in rows:
            keys = [k for k in row if k != "_event_id" and k in model.by_key]
            columns = ["_event_id", "_received_at", *(model.by_key[k].name for k in keys)]
            values = [row.get("_event_id", uuid.uuid4().hex), RECEIVED_AT]
            values += [convert(row[k], model.by_key[k].type) for k in keys]
            placeholders = ", ".join(f"${i + 1}" for i in range(len(values)))
            # The model version in the text: asyncpg caches statements with their parameter types, which widen.
            names = ", ".join(map(quote_ident, columns))
            await (conn or self.pool).execute(
                f"/* v{model.version} */ INSERT INTO {self.storage.qualified_table} ({names}) VALUES ({placeholders})",
                *values,
            )

    async def column(self, key: str) -> str:
        model = await self.catalog.model(self.storage.id)
        return quote_ident(model.by_key[key].name)


@pytest.fixture
async def table(pool: asyncpg.Pool, storage_name: str) -> StorageTable:
    storage, _ = await Catalog(pool).create(storage_name)
    return StorageTable(pool, storage)


async def create_export(store: ExportStore, **fields: Any) -> Export:
    fields.setdefault("name", f"exp{uuid.uuid4().hex[:8]}")
    # A running platform shares this database; its scheduler must leave the tests' exports alone.
    fields.setdefault("scheduled", False)
    return await store.create(ExportDefinition.model_validate(fields))
