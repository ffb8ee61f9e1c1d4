"""S3 (and S3-compatible APIs) as a file store: an object is visible only once its upload completed."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from boto3.s3.transfer import TransferConfig

from headrace.filestores.base import CHUNK_BYTES, FileStore, FileStoreError, RemoteFile, bounded
from headrace.outbound import OutboundPolicy, OutboundRefused
from headrace.secrets import redact
from headrace.settings import Settings

if TYPE_CHECKING:  # from the type stubs of the dev extra (types-aioboto3[s3])
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3 import S3Client

# Big files go up as multipart uploads; the object exists only once CompleteMultipartUpload succeeds.
_TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=4)


class S3Bucket(Protocol):
    """What a definition says of a bucket (an S3Connection with the bucket's name)."""

    @property
    def bucket(self) -> str: ...
    @property
    def endpoint_url(self) -> str | None: ...
    def client(self) -> ClientCreatorContext[S3Client]: ...


def _glob_prefix(pattern: str) -> str:
    """The literal part of a pattern before its first wildcard: what S3 can list by."""
    match = re.search(r"[*?\[]", pattern)
    return pattern if match is None else pattern[: match.start()]


class S3Store(FileStore):
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.where = f"s3://{bucket}"

    def _failed(self, action: str, key: str, exc: BaseException) -> FileStoreError:
        # botocore's errors share no useful base beyond Exception, hence the broad catches below.
        return FileStoreError(f"cannot {action} s3://{self.bucket}/{key}: {redact(str(exc))}")

    async def list(self, pattern: str) -> list[RemoteFile]:
        pattern = pattern.lstrip("/")
        found: list[RemoteFile] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=_glob_prefix(pattern)):
                for item in page.get("Contents", []):
                    if fnmatch.fnmatchcase(item["Key"], pattern):
                        found.append(RemoteFile(item["Key"], item["Size"], item["LastModified"].timestamp()))
                bounded(found, pattern)  # page by page: a huge bucket is not listed to its end first
        except FileStoreError:
            raise
        except Exception as exc:
            raise self._failed("list", pattern, exc) from exc
        return found

    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=path.lstrip("/"))
            async for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                yield chunk
        except Exception as exc:
            raise self._failed("read", path, exc) from exc

    async def put_file(self, local: Path, name: str) -> None:
        try:
            await self.client.upload_file(str(local), self.bucket, name, Config=_TRANSFER)
        except Exception as exc:
            raise self._failed("write", name, exc) from exc

    async def put_bytes(self, data: bytes, name: str) -> None:
        try:
            await self.client.put_object(Bucket=self.bucket, Key=name, Body=data)
        except Exception as exc:
            raise self._failed("write", name, exc) from exc

    async def delete(self, name: str) -> None:
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            raise self._failed("delete", name, exc) from exc


@asynccontextmanager
async def open_s3(location: S3Bucket, settings: Settings) -> AsyncIterator[S3Store]:
    try:
        await OutboundPolicy.from_settings(settings).check_url(location.endpoint_url)
    except (OSError, OutboundRefused) as exc:
        raise FileStoreError(f"cannot connect to the S3 endpoint: {redact(str(exc))}") from None
    async with location.client() as client:
        yield S3Store(client, location.bucket)
