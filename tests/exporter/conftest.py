"""Exporter fixtures: a real S3 API server (moto) and a real OpenSSH SFTP server, plus rows-topic helpers."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from exporter.definitions import Export, ExportDefinition, ExportStore, S3Destination, SftpDestination
from exporter.runs import ExportRunner
from headrace.catalog import Catalog
from headrace.kafka import Topics, ensure_topics
from headrace.platform.scratch import ScratchS3, ScratchSftp
from headrace.rows import encode_row
from headrace.settings import Settings
from tests.conftest import s3_client

ROWS_PARTITIONS = 2


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


@pytest.fixture
async def runner(settings: Settings, pool: asyncpg.Pool) -> ExportRunner:
    return ExportRunner(settings, pool)


@pytest.fixture
async def store(pool: asyncpg.Pool) -> ExportStore:
    return ExportStore(pool)


class RowsTopic:
    """A storage in the catalog with its rows topic, fed the way transform feeds it (rows.encode_row)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.topic = Topics(settings.topic_prefix).rows(name)
        self.next_source_offset = {p: 0 for p in range(ROWS_PARTITIONS)}

    async def send(self, rows: list[dict[str, Any]], partition: int = 0, *, repeat_last: bool = False) -> None:
        """Publish rows on one partition with growing source offsets; repeat_last republishes the previous row."""
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.require_kafka_bootstrap(), acks="all")
        await producer.start()
        try:
            for row in rows:
                if not repeat_last:
                    self.next_source_offset[partition] += 1
                message = {
                    "_event_id": row.get("_event_id", uuid.uuid4().hex),
                    "_received_at": "2021-04-08T12:00:00Z",
                    "_inserted_at": "2021-04-08T12:00:01Z",
                } | {k: v for k, v in row.items() if k != "_event_id"}
                message |= {"_source_partition": partition, "_source_offset": self.next_source_offset[partition]}
                await producer.send_and_wait(self.topic, encode_row(message), partition=partition)
        finally:
            await producer.stop()


@pytest.fixture
async def rows_topic(settings: Settings, pool: asyncpg.Pool, storage_name: str) -> RowsTopic:
    await Catalog(pool).create(storage_name)
    topic = RowsTopic(settings, storage_name)
    await ensure_topics(settings, [topic.topic], partitions=ROWS_PARTITIONS)
    return topic


async def create_export(store: ExportStore, **fields: Any) -> Export:
    fields.setdefault("name", f"exp{uuid.uuid4().hex[:8]}")
    # A running platform shares this database; its scheduler must leave the tests' exports alone.
    fields.setdefault("scheduled", False)
    return await store.create(ExportDefinition.model_validate(fields))
