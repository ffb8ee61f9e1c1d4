"""What a collector may read, as validated definitions: Postgres, SFTP, FTP(S) or S3 files, an HTTP JSON API."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headrace.filestores.ftp_fields import FtpFields
from headrace.outbound import dsn_hosts, url_host
from headrace.s3 import S3Connection


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresSource(Strict):
    kind: Literal["postgres"] = "postgres"
    dsn: str
    table: str | None = None  # `name` or `schema.name`
    query: str | None = None  # any SELECT; it is wrapped as a subquery

    @model_validator(mode="after")
    def _table_or_query(self) -> PostgresSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("a Postgres source needs a table or a query (one of them)")
        return self


def file_url_fields(url: str) -> dict[str, Any]:
    """sftp://user[:password]@host[:port]/path, ftp://… or ftps://… likewise, or s3://bucket/key (any of them may hold
    a glob) as a file source's fields."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme in ("sftp", "ftp", "ftps"):
        if not parts.hostname or not parts.username:
            raise ValueError(f"an {parts.scheme.upper()} URL is {parts.scheme}://user@host[:port]/path")
        port = parts.port or (22 if parts.scheme == "sftp" else 21)
        fields: dict[str, Any] = {"host": parts.hostname, "port": port, "user": unquote(parts.username)}
        if parts.password:
            fields["password"] = unquote(parts.password)
        return fields | {"pattern": path}
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("an S3 URL is s3://bucket/key")
        return {"bucket": parts.netloc, "pattern": path.lstrip("/")}
    # Not the URL itself in the message: it may carry credentials.
    raise ValueError(f"unsupported file URL scheme {parts.scheme!r}: use sftp://…, ftp://…, ftps://… or s3://…")


class _FileSource(Strict):
    # A glob on the file path (SFTP, FTP: in the file name only) or the object key (S3), e.g. /data/orders_*.csv
    pattern: str
    format: Literal["csv", "ndjson"] = "csv"
    delimiter: str = ","

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        """`{"kind": "sftp", "url": "sftp://user@host/dir/*.csv", …}`: the URL gives the fields the others leave out."""
        if not isinstance(data, dict) or "url" not in data:
            return data
        given = {k: v for k, v in data.items() if k != "url" and v is not None}
        url = data["url"]
        if not isinstance(url, str) or urlsplit(url).scheme != given.get("kind", urlsplit(url).scheme):
            raise ValueError(f"a {given.get('kind')} source's url starts with {given.get('kind')}://")
        return file_url_fields(url) | given

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, delimiter: str) -> str:
        if len(delimiter) != 1:
            raise ValueError("the delimiter is one character")
        return delimiter


class SftpSource(_FileSource):
    kind: Literal["sftp"] = "sftp"
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    private_key: str | None = None  # the key's text (OpenSSH or PEM)
    password: str | None = None
    host_key: str | None = None  # the server's public key; unset: the key it presents first is recorded, then enforced

    @model_validator(mode="after")
    def _needs_credentials(self) -> SftpSource:
        if not self.private_key and not self.password:
            raise ValueError("an SFTP source needs a private key or a password")
        return self


class FtpSource(_FileSource, FtpFields):
    """ftp:// or ftps:// (explicit TLS; `ca_cert` trusts a self-signed server)."""


class S3Source(_FileSource, S3Connection):
    kind: Literal["s3"] = "s3"
    bucket: str


class HttpSource(Strict):
    kind: Literal["http"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    records_path: str | None = None  # dotted path to the records' list in each page, e.g. data.items; unset: the body
    pagination: Literal["none", "page", "offset", "next"] = "none"
    page_param: str = "page"  # page: the page number; offset: the offset
    size_param: str | None = None  # the page size's parameter, when the API takes one
    page_size: int = Field(100, gt=0)
    first_page: int = 1
    next_path: str | None = None  # next: dotted path to the next page's URL (null or missing on the last page)
    max_pages: int = Field(10_000, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not the URL itself in the message: it may carry credentials.
            raise ValueError("an HTTP source's url is http(s)://host/…")
        return url

    @model_validator(mode="after")
    def _next_needs_path(self) -> HttpSource:
        if self.pagination == "next" and not self.next_path:
            raise ValueError("next-link pagination needs next_path")
        return self


Source = Annotated[PostgresSource | SftpSource | FtpSource | S3Source | HttpSource, Field(discriminator="kind")]
FileSource = Annotated[SftpSource | FtpSource | S3Source, Field(discriminator="kind")]
FILE_SOURCES = (SftpSource, FtpSource, S3Source)


def source_hosts(source: Source) -> list[tuple[str, int]]:
    """The hosts (and ports) a source connects to; a default S3 endpoint (AWS) names none."""
    if isinstance(source, PostgresSource):
        return dsn_hosts(source.dsn)
    if isinstance(source, SftpSource | FtpSource):
        return [(source.host, source.port)]
    if isinstance(source, S3Source):
        return [url_host(source.endpoint_url)] if source.endpoint_url else []
    assert isinstance(source, HttpSource)
    return [url_host(source.url)]
