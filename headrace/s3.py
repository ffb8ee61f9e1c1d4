"""How Headrace reaches an S3 API (AWS, MinIO, moto…): the connection fields and the aioboto3 client built from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aioboto3
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # from the type stubs of the dev extra (types-aioboto3[s3])
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3 import S3Client

DEFAULT_REGION = "us-east-1"


class S3Connection(BaseModel):
    """Endpoint and credentials; unset credentials fall back to boto's usual chain (environment, profile, role)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def client(self) -> ClientCreatorContext[S3Client]:
        """An async context manager giving an aioboto3 S3 client."""
        session = aioboto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=self.region or DEFAULT_REGION,
        )
        # A plain-HTTP endpoint (MinIO or moto on a private network) has no TLS to verify: not loading the CA
        # bundle saves ~0.3 s of CPU per client.
        plain = bool(self.endpoint_url and self.endpoint_url.startswith("http://"))
        return session.client("s3", endpoint_url=self.endpoint_url, verify=False if plain else None)
