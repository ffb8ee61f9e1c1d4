"""Export definitions: what an export ships, how, where and how often, kept in Postgres (headrace.exports)."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headrace.catalog import Catalog, validate_storage_name
from headrace.filestores.ftp_fields import FtpFields
from headrace.formats import FileOptions
from headrace.outbound import OutboundPolicy, url_host
from headrace.s3 import S3Connection
from headrace.secrets import SealedDefinitions, SecretFields, redact
from headrace.settings import Settings

# Credentials are sealed in Postgres; shown, only the allowlisted fields are in clear.
SECRETS = SecretFields(
    sealed=frozenset({"secret_access_key", "session_token", "password", "private_key"}),
    shown=frozenset(
        {
            *("name", "sources", "mode", "names", "privacy_filter", "consent_column", "format", "csv_separator"),
            *("csv_header", "parquet_compression", "frequency_minutes", "scheduled", "kind", "bucket", "folder"),
            *("region", "access_key_id", "host", "port", "user", "host_key", "ca_cert", "partition_level"),
            "event_time_column",
            "max_rows_per_file",
        }
    ),
    urls=frozenset({"endpoint_url"}),
)

FORMATS = ("csv", "ndjson", "parquet")
PARQUET_COMPRESSIONS = ("gzip", "zstd", "snappy")
FREQUENCIES = (15, 30, 60)
PARTITION_LEVELS = ("date", "hour", "half-hour", "quarter-hour")


class ExportNotFound(LookupError):
    pass


class ExportExists(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class S3Destination(S3Connection):
    kind: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3)
    folder: str = ""


class SftpDestination(_Strict):
    kind: Literal["sftp"] = "sftp"
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    password: str | None = None
    private_key: str | None = None  # the key itself (OpenSSH or PEM text), not a path
    folder: str = ""
    # The server's public key ("ssh-ed25519 AAAA…"); unset: the key it presents first is recorded, then enforced.
    host_key: str | None = None

    @model_validator(mode="after")
    def _needs_credentials(self) -> SftpDestination:
        if not self.password and not self.private_key:
            raise ValueError("an SFTP destination needs a password or a private key")
        return self


class FtpDestination(FtpFields):
    """ftp:// or ftps:// (explicit TLS; `ca_cert` trusts a self-signed server): named, written and renamed as SFTP."""

    folder: str = ""


Destination = Annotated[S3Destination | SftpDestination | FtpDestination, Field(discriminator="kind")]


class PropertySelection(_Strict):
    """all: every present and future property; include: only these; exclude: all but these."""

    mode: Literal["all", "include", "exclude"] = "all"
    names: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_match_mode(self) -> PropertySelection:
        if self.mode == "all" and self.names:
            raise ValueError("properties 'all' takes no names")
        if self.mode == "include" and not self.names:
            raise ValueError("properties 'include' needs at least one name")
        return self


class ExportDefinition(_Strict):
    name: str
    sources: Literal["all"] | list[str] = Field(description="'all' storages, or the storage names")
    properties: PropertySelection = Field(default_factory=PropertySelection)
    privacy_filter: bool = False
    consent_column: str = "visitor_privacy_consent"
    format: Literal["csv", "ndjson", "parquet"] = "csv"
    csv_separator: str = ","
    csv_header: bool = True
    # Parquet compresses inside the file (column chunks), so readers can still seek in it; the file is not gzipped.
    parquet_compression: Literal["gzip", "zstd", "snappy"] = "gzip"
    frequency_minutes: Literal[15, 30, 60] = 60
    scheduled: bool = Field(True, description="Whether the scheduler runs it; off: it runs only when asked")
    destination: Destination
    partition_level: Literal["date", "hour", "half-hour", "quarter-hour"] = "hour"
    event_time_column: str = "hit_time_utc"
    max_rows_per_file: int = Field(1_000_000, ge=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        try:
            return validate_storage_name(name)
        except ValueError as exc:
            raise ValueError(str(exc).replace("storage", "export")) from None

    @field_validator("sources")
    @classmethod
    def _valid_sources(cls, sources: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if sources == "all":
            return sources
        if not sources:
            raise ValueError("sources: name at least one storage, or 'all'")
        return [validate_storage_name(s) for s in dict.fromkeys(sources)]

    def file_options(self) -> FileOptions:
        """What the files are: text formats always gzipped (csv.gz, json.gz), Parquet compressed inside."""
        return FileOptions(self.format, self.csv_separator, self.csv_header, True, self.parquet_compression)

    @field_validator("csv_separator")
    @classmethod
    def _one_character(cls, separator: str) -> str:
        if len(separator) != 1 or separator in '\r\n"':
            raise ValueError("the CSV separator is one character other than a quote or a line break")
        return separator


@dataclass(frozen=True)
class Export:
    id: uuid.UUID
    definition: ExportDefinition
    created_at: datetime

    @property
    def name(self) -> str:
        return self.definition.name

    def to_json(self) -> dict[str, Any]:
        """The export as shown to people: only allowlisted fields in clear."""
        return {"id": str(self.id), "created_at": self.created_at.isoformat()} | SECRETS.mask(
            self.definition.model_dump(mode="json")
        )


def destination_host(destination: S3Destination | SftpDestination | FtpDestination) -> tuple[str, int] | None:
    """The host (and port) a destination connects to; a default S3 endpoint (AWS) names none."""
    if isinstance(destination, SftpDestination | FtpDestination):
        return destination.host, destination.port
    return url_host(destination.endpoint_url) if destination.endpoint_url else None


class ExportStore:
    """Create, find, list and delete export definitions, stored with their credentials sealed."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.sealed = SealedDefinitions(pool, settings, SECRETS, "headrace.exports")
        self.outbound = OutboundPolicy.from_settings(settings)

    async def _export(self, row: asyncpg.Record) -> Export:
        definition = ExportDefinition.model_validate(await self.sealed.open(row["id"], row["definition"]))
        return Export(row["id"], definition, row["created_at"])

    async def _check(self, definition: ExportDefinition) -> None:
        # An internal address named outright is refused now; a name is resolved and checked at each run.
        host = destination_host(definition.destination)
        if host is not None:
            self.outbound.check_literal(host[0])
        if definition.sources != "all":
            catalog = Catalog(self.pool)
            for name in definition.sources:
                await catalog.get(name)  # StorageNotFound names the missing one

    async def create(self, definition: ExportDefinition) -> Export:
        await self._check(definition)
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO headrace.exports (id, name, definition) VALUES ($1, $2, $3)"
                " RETURNING id, definition, created_at",
                uuid.uuid4(),
                definition.name,
                self.sealed.seal(definition.model_dump(mode="json")),
            )
        except asyncpg.UniqueViolationError as exc:
            raise ExportExists(f"export {definition.name!r} exists already") from exc
        assert row is not None  # INSERT … RETURNING gives its row
        return await self._export(row)

    async def replace(self, name: str, given: dict[str, Any]) -> Export:
        """Change an export's definition; its horizon and runs stay, and credentials sent back masked are kept."""
        current = await self.get(name)
        merged = SECRETS.keep_masked(given, current.definition.model_dump(mode="json"))
        definition = ExportDefinition.model_validate(merged | {"name": name})
        await self._check(definition)
        row = await self.pool.fetchrow(
            "UPDATE headrace.exports SET definition = $2 WHERE id = $1 RETURNING id, definition, created_at",
            current.id,
            self.sealed.seal(definition.model_dump(mode="json")),
        )
        assert row is not None  # the export was found above; a delete meanwhile would answer 404 on the next read
        return await self._export(row)

    async def get(self, name: str) -> Export:
        row = await self.pool.fetchrow("SELECT id, definition, created_at FROM headrace.exports WHERE name = $1", name)
        if row is None:
            raise ExportNotFound(f"no export named {name!r}")
        return await self._export(row)

    async def list(self) -> list[Export]:
        rows = await self.pool.fetch("SELECT id, definition, created_at FROM headrace.exports ORDER BY name")
        return [await self._export(r) for r in rows]

    async def delete(self, name: str) -> None:
        deleted = await self.pool.fetchval("DELETE FROM headrace.exports WHERE name = $1 RETURNING id", name)
        if deleted is None:
            raise ExportNotFound(f"no export named {name!r}")

    async def last_live_successes(self) -> dict[uuid.UUID, datetime]:
        """When each export's latest live run that did not fail ended (what the last-success gauge says)."""
        rows = await self.pool.fetch(
            "SELECT export_id, max(finished_at) AS at FROM headrace.export_runs"
            " WHERE kind = 'live' AND status IN ('succeeded', 'empty') AND finished_at IS NOT NULL GROUP BY export_id"
        )
        return {r["export_id"]: r["at"] for r in rows}

    async def runs(self, export: Export, limit: int = 20) -> builtins.list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_RUN_COLUMNS} FROM headrace.export_runs WHERE export_id = $1 ORDER BY started_at DESC LIMIT $2",
            export.id,
            limit,
        )
        return [{k: _shown(k, v) for k, v in dict(r).items()} for r in rows]

    async def last_runs(self) -> dict[str, dict[str, Any]]:
        """Each export's latest run by export id, for the list (one statement for all)."""
        rows = await self.pool.fetch(
            f"SELECT DISTINCT ON (export_id) export_id, {_RUN_COLUMNS} FROM headrace.export_runs"
            " ORDER BY export_id, started_at DESC"
        )
        return {str(r["export_id"]): {k: _shown(k, v) for k, v in dict(r).items() if k != "export_id"} for r in rows}


_RUN_COLUMNS = (
    "id, kind, trigger, status, started_at, finished_at, files, rows, bytes, dropped_privacy, unknown_time, report,"
    " error, xid_from::text, xid_to::text, replay_of, file_list"
)


def _shown(key: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if key == "error" and value:
        return redact(value)  # stored redacted; a run recorded before redaction existed may not be
    return value
