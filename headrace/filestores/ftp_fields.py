"""What definitions say of an FTP or FTPS server, and how its certificate is trusted: no FTP client loaded here."""

from __future__ import annotations

import ssl
from typing import Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FtpServer(Protocol):
    """What a definition says of an FTP server (collector sources, export destinations and upload steps have these)."""

    @property
    def kind(self) -> str: ...  # "ftp" or "ftps" (explicit TLS on the control and data connections)
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str | None: ...
    @property
    def ca_cert(self) -> str | None: ...  # PEM certificates an FTPS server's chain must end at; unset: the system's


def tls_context(ca_cert: str | None) -> ssl.SSLContext:
    """Verification always on, host name included: a self-signed server is trusted by giving its certificate (or its
    CA's) as ca_cert, which then replaces the system's CAs for that server."""
    return ssl.create_default_context(cadata=ca_cert) if ca_cert else ssl.create_default_context()


class FtpFields(BaseModel):
    """An FTP server's fields as definitions take them (collector sources, export destinations, upload steps)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ftp", "ftps"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(21, ge=1, le=65535)
    user: str = Field("anonymous", min_length=1, max_length=255)
    password: str | None = Field(None, max_length=1024)
    # FTPS: the PEM certificate(s) the server's chain must end at, e.g. a self-signed server's own certificate.
    ca_cert: str | None = Field(None, max_length=100_000)

    @model_validator(mode="after")
    def _ca_cert_is_for_ftps(self) -> Self:
        if self.ca_cert and self.kind != "ftps":
            raise ValueError("ca_cert is for ftps (plain FTP has no certificate to check)")
        if self.ca_cert:
            try:
                tls_context(self.ca_cert)
            except (ssl.SSLError, ValueError):
                raise ValueError("ca_cert is not PEM certificate text") from None
        return self
