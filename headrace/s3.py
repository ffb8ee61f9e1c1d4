"""How Headrace reaches an S3 API (AWS, MinIO, moto…): the connection fields and the aioboto3 client built from them."""

from __future__ import annotations

from typing import Any

import aioboto3
from pydantic import BaseModel, ConfigDict

DEFAULT_REGION = "us-east-1"


class S3Connection(BaseModel):
    """Endpoint and credentials; unset credentials fall back to boto's usual chain (environment, profile, role)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def client(self) -> Any:
        """An async context manager giving an aioboto3 S3 client."""
        session = aioboto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=self.region or DEFAULT_REGION,
        )
        return session.client("s3", endpoint_url=self.endpoint_url)
