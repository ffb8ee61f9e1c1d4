"""S3 (and S3-compatible) delivery with aioboto3: an S3 object becomes visible only when its upload completes."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from exporter.definitions import S3Destination
from exporter.destinations import DeliveryFailed, Destination
from headrace.outbound import OutboundPolicy, OutboundRefused
from headrace.secrets import redact
from headrace.settings import Settings

if TYPE_CHECKING:  # from the type stubs of the dev extra (types-aioboto3[s3])
    from types_aiobotocore_s3 import S3Client

# Big files go up as multipart uploads; the object exists only once CompleteMultipartUpload succeeds.
_TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=4)


class S3(Destination):
    def __init__(self, settings: S3Destination, platform: Settings) -> None:
        self.settings = settings
        self.outbound = OutboundPolicy.from_settings(platform)
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None

    async def open(self) -> None:
        try:
            await self.outbound.check_url(self.settings.endpoint_url)
        except (OSError, OutboundRefused) as exc:
            raise DeliveryFailed(f"cannot reach the S3 endpoint: {redact(str(exc))}") from None
        self._client = await self._stack.enter_async_context(self.settings.client())

    async def close(self) -> None:
        await self._stack.aclose()

    @property
    def _s3(self) -> S3Client:
        assert self._client is not None, "the destination is used between open() and close()"
        return self._client

    async def put_file(self, local: Path, name: str) -> None:
        try:
            await self._s3.upload_file(str(local), self.settings.bucket, name, Config=_TRANSFER)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DeliveryFailed(f"s3://{self.settings.bucket}/{name}: {redact(str(exc))}") from exc

    async def put_bytes(self, data: bytes, name: str) -> None:
        try:
            await self._s3.put_object(Bucket=self.settings.bucket, Key=name, Body=data)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DeliveryFailed(f"s3://{self.settings.bucket}/{name}: {redact(str(exc))}") from exc

    async def delete(self, name: str) -> None:
        try:
            await self._s3.delete_object(Bucket=self.settings.bucket, Key=name)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DeliveryFailed(f"s3://{self.settings.bucket}/{name}: {redact(str(exc))}") from exc
