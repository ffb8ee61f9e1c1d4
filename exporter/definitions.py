"""Export definitions: what an export ships, how, where and how often, kept in Postgres (headrace.exports)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headrace.catalog import Catalog, validate_storage_name
from headrace.s3 import S3Connection

# Fields that hold credentials: stored, used, never shown back.
SECRET_FIELDS = frozenset({"secret_access_key", "session_token", "password", "private_key"})
HIDDEN = "***"

FORMATS = ("csv", "ndjson", "parquet")
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
    # The server's public key ("ssh-ed25519 AAAA…"); unset: any host key is accepted.
    host_key: str | None = None

    @model_validator(mode="after")
    def _needs_credentials(self) -> SftpDestination:
        if not self.password and not self.private_key:
            raise ValueError("an SFTP destination needs a password or a private key")
        return self


Destination = Annotated[S3Destination | SftpDestination, Field(discriminator="kind")]


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

    @field_validator("csv_separator")
    @classmethod
    def _one_character(cls, separator: str) -> str:
        if len(separator) != 1 or separator in '\r\n"':
            raise ValueError("the CSV separator is one character other than a quote or a line break")
        return separator


def public_json(data: Any) -> Any:
    """A definition's JSON with every credential replaced by a marker that only says it is set."""
    if isinstance(data, dict):
        return {k: (HIDDEN if v else v) if k in SECRET_FIELDS else public_json(v) for k, v in data.items()}
    if isinstance(data, list):
        return [public_json(v) for v in data]
    return data


@dataclass(frozen=True)
class Export:
    id: uuid.UUID
    definition: ExportDefinition
    created_at: datetime

    @property
    def name(self) -> str:
        return self.definition.name

    def to_json(self) -> dict[str, Any]:
        """The export as shown to people: credentials hidden."""
        return {"id": str(self.id), "created_at": self.created_at.isoformat()} | public_json(
            self.definition.model_dump(mode="json")
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Export:
        return cls(row["id"], ExportDefinition.model_validate(row["definition"]), row["created_at"])


class ExportStore:
    """Create, find, list and delete export definitions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, definition: ExportDefinition) -> Export:
        if definition.sources != "all":
            catalog = Catalog(self.pool)
            for name in definition.sources:
                await catalog.get(name)  # StorageNotFound names the missing one
        try:
            row = await self.pool.fetchrow(
                "INSERT INTO headrace.exports (id, name, definition) VALUES ($1, $2, $3)"
                " RETURNING id, definition, created_at",
                uuid.uuid4(),
                definition.name,
                definition.model_dump(mode="json"),
            )
        except asyncpg.UniqueViolationError as exc:
            raise ExportExists(f"export {definition.name!r} exists already") from exc
        return Export.from_row(row)

    async def get(self, name: str) -> Export:
        row = await self.pool.fetchrow("SELECT id, definition, created_at FROM headrace.exports WHERE name = $1", name)
        if row is None:
            raise ExportNotFound(f"no export named {name!r}")
        return Export.from_row(row)

    async def list(self) -> list[Export]:
        rows = await self.pool.fetch("SELECT id, definition, created_at FROM headrace.exports ORDER BY name")
        return [Export.from_row(r) for r in rows]

    async def delete(self, name: str) -> None:
        deleted = await self.pool.fetchval("DELETE FROM headrace.exports WHERE name = $1 RETURNING id", name)
        if deleted is None:
            raise ExportNotFound(f"no export named {name!r}")

    async def runs(self, export: Export, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT id, kind, trigger, status, started_at, finished_at, files, rows, bytes, dropped_privacy,"
            " unknown_time, report, error FROM headrace.export_runs WHERE export_id = $1"
            " ORDER BY started_at DESC LIMIT $2",
            export.id,
            limit,
        )
        return [
            {
                k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v)
                for k, v in dict(r).items()
            }
            for r in rows
        ]
