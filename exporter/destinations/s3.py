"""S3 (and S3-compatible) delivery with aioboto3: an S3 object becomes visible only when its upload completes."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from exporter.definitions import S3Destination
from exporter.destinations import DeliveryFailed, Destination

# Big files go up as multipart uploads; the object exists only once CompleteMultipartUpload succeeds.
_TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=4)


class S3(Destination):
    def __init__(self, settings: S3Destination) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        self._client = await self._stack.enter_async_context(self.settings.client())

    async def close(self) -> None:
        await self._stack.aclose()

    async def put_file(self, local: Path, name: str) -> None:
        try:
            await self._client.upload_file(str(local), self.settings.bucket, name, Config=_TRANSFER)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DeliveryFailed(f"s3://{self.settings.bucket}/{name}: {exc}") from exc

    async def put_bytes(self, data: bytes, name: str) -> None:
        try:
            await self._client.put_object(Bucket=self.settings.bucket, Key=name, Body=data)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise DeliveryFailed(f"s3://{self.settings.bucket}/{name}: {exc}") from exc
