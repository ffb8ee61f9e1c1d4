"""The schema registry's Postgres store: schemas by id, subject versions, compatibility config.

Every function takes a connection, so the REST service and the catalog share one implementation and the
catalog can register a model version inside the transaction that changes the model.

Storage subjects (`<storage name>-value`) mirror the storage's model, and the model is the source of
truth: a widening the model has already applied to the table (an integer column becoming a string, say)
is not Avro-compatible, yet the registry cannot refuse it. So `register_storage_model` registers with
the compatibility check bypassed, and on a subject's first registration sets its compatibility level to
NONE, so that `GET /config/<storage>-value` tells clients truthfully that versions of a storage subject
are not checked against each other. An operator may still change that level; the catalog ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

from headrace.models.avro import model_schema
from headrace.models.model import Model
from headrace.postgres import Connection
from headrace.registry.compatibility import DEFAULT_MODE, MODES, NONE, incompatibilities
from headrace.registry.errors import (
    IncompatibleSchema,
    InvalidCompatibilityLevel,
    InvalidVersion,
    SchemaNotFound,
    SubjectConfigNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from headrace.registry.schemas import ParsedSchema, parse_avro

GLOBAL = ""  # the config row of the global compatibility level
MAX_VERSION = 2**31 - 1
LATEST = None  # a version argument meaning the latest live version


def storage_subject(storage_name: str) -> str:
    return f"{storage_name}-value"


@dataclass(frozen=True)
class SubjectVersion:
    subject: str
    version: int
    id: int
    schema: str
    schema_type: str = "AVRO"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema}
        if self.schema_type != "AVRO":
            body["schemaType"] = self.schema_type
        return body


def parse_version(text: str | int) -> int | None:
    """A version path segment: 'latest' (or -1) is None, else an integer from 1 to 2^31-1."""
    if str(text) in ("latest", "-1"):
        return LATEST
    try:
        version = int(text)
    except ValueError:
        version = 0
    if not 1 <= version <= MAX_VERSION:
        raise InvalidVersion(
            f"The specified version '{text}' is not a valid version id. "
            f'Allowed values are between [1, {MAX_VERSION}] and the string "latest"'
        )
    return version


@lru_cache(maxsize=1024)
def _parsed(text: str) -> ParsedSchema:
    # Stored schemas never change, so their parsed form is cached by text.
    return parse_avro(text)


def _versions_parsed(rows: list[asyncpg.Record]) -> list[tuple[int, Any]]:
    return [(r["version"], _parsed(r["schema_text"]).parsed) for r in rows]


_VERSION_ROWS = (
    "SELECT v.version, v.deleted, v.schema_id, s.schema_text, s.schema_type, s.fingerprint"
    " FROM registry.subject_versions v JOIN registry.schemas s ON s.id = v.schema_id"
    " WHERE v.subject = $1 ORDER BY v.version"
)


def _subject_version(subject: str, row: asyncpg.Record) -> SubjectVersion:
    return SubjectVersion(subject, row["version"], row["schema_id"], row["schema_text"], row["schema_type"])


async def _lock_subject(conn: Connection, subject: str) -> None:
    """Serialise writers of one subject, so that version numbers are assigned one at a time."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "headrace.registry:" + subject)


async def _rows(conn: Connection, subject: str, deleted: bool = False) -> list[asyncpg.Record]:
    rows = await conn.fetch(_VERSION_ROWS, subject)
    return rows if deleted else [r for r in rows if not r["deleted"]]


async def _schema_id(conn: Connection, schema: ParsedSchema, schema_type: str) -> int:
    schema_id: int | None = await conn.fetchval(
        "INSERT INTO registry.schemas (schema_type, schema_text, fingerprint) VALUES ($1, $2, $3)"
        " ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
        schema_type,
        schema.text,
        schema.fingerprint,
    )
    if schema_id is not None:
        return schema_id
    existing: int = await conn.fetchval("SELECT id FROM registry.schemas WHERE fingerprint = $1", schema.fingerprint)
    return existing


async def register(
    conn: Connection, subject: str, schema: ParsedSchema, *, schema_type: str = "AVRO", check: bool = True
) -> SubjectVersion:
    """Register a schema under a subject (or find it there already); call inside a transaction."""
    await _lock_subject(conn, subject)
    existing = await conn.fetchrow(
        "SELECT v.version, v.schema_id, s.schema_text, s.schema_type"
        " FROM registry.subject_versions v JOIN registry.schemas s ON s.id = v.schema_id"
        " WHERE v.subject = $1 AND NOT v.deleted AND s.fingerprint = $2 ORDER BY v.version DESC LIMIT 1",
        subject,
        schema.fingerprint,
    )
    if existing is not None:
        return _subject_version(subject, existing)
    if check:
        # Only a checked registration reads the earlier versions; the catalog's path stays one row per change.
        mode = await compatibility_level(conn, subject)
        problems = incompatibilities(mode, schema.parsed, _versions_parsed(await _rows(conn, subject)))
        if problems:
            raise IncompatibleSchema(
                f"Schema being registered is incompatible with an earlier schema for subject {subject!r}"
                f" (compatibility {mode}); details: {'; '.join(problems)}"
            )
    schema_id = await _schema_id(conn, schema, schema_type)
    version = await conn.fetchval(
        "SELECT coalesce(max(version), 0) + 1 FROM registry.subject_versions WHERE subject = $1", subject
    )
    await conn.execute(
        "INSERT INTO registry.subject_versions (subject, version, schema_id) VALUES ($1, $2, $3)",
        subject,
        version,
        schema_id,
    )
    return SubjectVersion(subject, version, schema_id, schema.text, schema_type)


async def lookup(conn: Connection, subject: str, schema: ParsedSchema, deleted: bool = False) -> SubjectVersion:
    """The version of a subject that holds this schema."""
    rows = await _rows(conn, subject, deleted)
    if not rows:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    for row in reversed(rows):
        if bytes(row["fingerprint"]) == schema.fingerprint:
            return _subject_version(subject, row)
    raise SchemaNotFound(f"Schema not found under subject '{subject}'")


async def subjects(conn: Connection, deleted: bool = False, prefix: str = "") -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT subject FROM registry.subject_versions"
        " WHERE ($1 OR NOT deleted) AND starts_with(subject, $2) ORDER BY subject",
        deleted,
        prefix,
    )
    return [r["subject"] for r in rows]


async def versions(conn: Connection, subject: str, deleted: bool = False) -> list[int]:
    rows = await _rows(conn, subject, deleted)
    if not rows:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    return [r["version"] for r in rows]


async def get_version(conn: Connection, subject: str, version: int | None, deleted: bool = False) -> SubjectVersion:
    """One version of a subject; version None is the latest live one."""
    rows = await _rows(conn, subject, deleted=True)
    live = [r for r in rows if not r["deleted"]]
    if not (rows if deleted else live):
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    if version is LATEST:
        if not live:
            raise VersionNotFound(f"Subject '{subject}' has no live version.")
        return _subject_version(subject, live[-1])
    for row in rows if deleted else live:
        if row["version"] == version:
            return _subject_version(subject, row)
    raise VersionNotFound(f"Version {version} not found.")


async def delete_version(conn: Connection, subject: str, version: int | None, permanent: bool = False) -> int:
    """Soft-delete a version, or delete a soft-deleted one permanently; returns its number."""
    await _lock_subject(conn, subject)
    rows = await _rows(conn, subject, deleted=True)
    if not rows:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    if version is LATEST:
        candidates = rows if permanent else [r for r in rows if not r["deleted"]]
        row = candidates[-1] if candidates else None
    else:
        row = next((r for r in rows if r["version"] == version), None)
    if row is None:
        raise VersionNotFound(f"Version {version} not found.")
    if permanent:
        if not row["deleted"]:
            raise VersionNotSoftDeleted(
                f"Subject '{subject}' Version {row['version']} was not deleted first before being permanently deleted"
            )
        await conn.execute(
            "DELETE FROM registry.subject_versions WHERE subject = $1 AND version = $2", subject, row["version"]
        )
    else:
        if row["deleted"]:
            raise VersionSoftDeleted(f"Subject '{subject}' Version {row['version']} was soft deleted.")
        await conn.execute(
            "UPDATE registry.subject_versions SET deleted = true WHERE subject = $1 AND version = $2",
            subject,
            row["version"],
        )
    deleted_version: int = row["version"]
    return deleted_version


async def delete_subject(conn: Connection, subject: str, permanent: bool = False) -> list[int]:
    """Soft-delete every live version, or permanently delete a soft-deleted subject; returns the versions."""
    await _lock_subject(conn, subject)
    rows = await _rows(conn, subject, deleted=True)
    if not rows:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    live = [r["version"] for r in rows if not r["deleted"]]
    if permanent:
        if live:
            raise SubjectNotSoftDeleted(f"Subject '{subject}' was not deleted first before being permanently deleted")
        await conn.execute("DELETE FROM registry.subject_versions WHERE subject = $1", subject)
        await conn.execute("DELETE FROM registry.config WHERE subject = $1", subject)
        return [r["version"] for r in rows]
    if not live:
        raise SubjectSoftDeleted(f"Subject '{subject}' was soft deleted.")
    await conn.execute("UPDATE registry.subject_versions SET deleted = true WHERE subject = $1", subject)
    return live


async def get_schema(conn: Connection, schema_id: int) -> tuple[str, str]:
    """The text and type of a schema by id."""
    row = await conn.fetchrow("SELECT schema_text, schema_type FROM registry.schemas WHERE id = $1", schema_id)
    if row is None:
        raise SchemaNotFound(f"Schema {schema_id} not found")
    return row["schema_text"], row["schema_type"]


async def schema_versions(conn: Connection, schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
    """Every subject version that holds a schema."""
    await get_schema(conn, schema_id)
    rows = await conn.fetch(
        "SELECT subject, version FROM registry.subject_versions WHERE schema_id = $1 AND ($2 OR NOT deleted)"
        " ORDER BY subject, version",
        schema_id,
        deleted,
    )
    return [{"subject": r["subject"], "version": r["version"]} for r in rows]


def _check_level(level: Any) -> str:
    if not isinstance(level, str) or level.upper() not in MODES:
        raise InvalidCompatibilityLevel(f"Invalid compatibility level {level!r}: one of {', '.join(MODES)}")
    return level.upper()


async def compatibility_level(conn: Connection, subject: str) -> str:
    """The level that applies to a subject: its own, else the global one."""
    level = await conn.fetchval(
        # The subject's own row sorts first (false < true), the global one is the fallback.
        "SELECT compatibility FROM registry.config WHERE subject = ANY($1::text[]) ORDER BY subject = $2 LIMIT 1",
        [subject, GLOBAL],
        GLOBAL,
    )
    return level or DEFAULT_MODE


async def get_config(conn: Connection, subject: str | None = None, default_to_global: bool = False) -> str:
    if subject is None or default_to_global:
        return await compatibility_level(conn, subject or GLOBAL)
    level: str | None = await conn.fetchval("SELECT compatibility FROM registry.config WHERE subject = $1", subject)
    if level is None:
        raise SubjectConfigNotFound(f"Subject '{subject}' does not have subject-level compatibility configured")
    return level


async def set_config(conn: Connection, subject: str | None, level: Any) -> str:
    checked = _check_level(level)
    await conn.execute(
        "INSERT INTO registry.config (subject, compatibility) VALUES ($1, $2)"
        " ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility, updated_at = now()",
        subject or GLOBAL,
        checked,
    )
    return checked


async def delete_config(conn: Connection, subject: str) -> str:
    """Drop a subject's own level (it then follows the global one); returns the level it had."""
    level: str | None = await conn.fetchval(
        "DELETE FROM registry.config WHERE subject = $1 RETURNING compatibility", subject
    )
    if level is None:
        raise SubjectConfigNotFound(f"Subject '{subject}' does not have subject-level compatibility configured")
    return level


async def check_compatibility(conn: Connection, subject: str, version: int | None, schema: ParsedSchema) -> list[str]:
    """Why a schema breaks the subject's level against one version (None: the latest); empty if it does not."""
    existing = await get_version(conn, subject, version)
    mode = (await compatibility_level(conn, subject)).removesuffix("_TRANSITIVE")
    return incompatibilities(mode, schema.parsed, [(existing.version, _parsed(existing.schema).parsed)])


async def check_compatibility_all(conn: Connection, subject: str, schema: ParsedSchema) -> list[str]:
    """Why a schema breaks the subject's level against its live versions (the latest, or all if transitive)."""
    rows = await _rows(conn, subject)
    mode = await compatibility_level(conn, subject)
    return incompatibilities(mode, schema.parsed, _versions_parsed(rows))


async def register_storage_model(conn: Connection, storage_name: str, model: Model) -> tuple[int, int]:
    """Register a storage's model version as subject `<storage>-value`, unchecked (see the module docstring).

    Returns (schema id, subject version). Call inside the transaction that records the model version.
    """
    subject = storage_subject(storage_name)
    await conn.execute(
        "INSERT INTO registry.config (subject, compatibility) VALUES ($1, $2) ON CONFLICT (subject) DO NOTHING",
        subject,
        NONE,
    )
    registered = await register(conn, subject, parse_avro(model_schema(storage_name, model)), check=False)
    return registered.id, registered.version


async def delete_storage_subject(conn: Connection, storage_name: str) -> list[int]:
    """Delete a deleted storage's subject `<storage>-value` permanently, with its config; returns its versions.

    The schemas stay (by id): events still in flight may name them. Call inside the transaction deleting the storage.
    """
    subject = storage_subject(storage_name)
    rows = await _rows(conn, subject, deleted=True)
    if any(not row["deleted"] for row in rows):
        await delete_subject(conn, subject)
    if rows:
        await delete_subject(conn, subject, permanent=True)
    await conn.execute("DELETE FROM registry.config WHERE subject = $1", subject)
    return [row["version"] for row in rows]
