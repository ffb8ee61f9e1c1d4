"""Storages: create, find, lock, tokens, and model changes applied to their tables in one transaction."""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from headrace.catalog.columns import create_table_sql, transaction_index_sql
from headrace.models import Model, ModelChange
from headrace.models.types import ColumnType
from headrace.postgres import Connection, quote_ident
from headrace.registry import register_storage_model

STORAGE_SCHEMA = "storage"
# Where transform stages a batch's rows until the batch is complete, one table per batch (headrace.batches).
STAGING_SCHEMA = "headrace_staging"
# Names of storages, collectors and exports: safe as Postgres identifiers, topic names and file-name parts.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
LOAD_MODES = ("append", "merge", "replace")
# The Postgres NOTIFY channel a storage's creation is announced on, its name as payload.
STORAGE_CREATED_CHANNEL = "headrace_storage_created"


class StorageNotFound(LookupError):
    pass


class StorageExists(ValueError):
    pass


class InvalidStorageName(ValueError):
    pass


def validate_storage_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidStorageName(
            f"invalid storage name {name!r}: 1 to 63 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Storage:
    id: uuid.UUID
    name: str
    table_name: str
    primary_key: tuple[str, ...]
    load_mode: str
    locked: bool
    model_version: int

    @property
    def qualified_table(self) -> str:
        return f"{quote_ident(STORAGE_SCHEMA)}.{quote_ident(self.table_name)}"

    def push_url(self, base_url: str, token: str) -> str:
        return f"{base_url}/api/data_source/{self.id}/push/{token}"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Storage:
        return cls(
            id=row["id"],
            name=row["name"],
            table_name=row["table_name"],
            primary_key=tuple(row["primary_key"]),
            load_mode=row["load_mode"],
            locked=row["locked"],
            model_version=row["model_version"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "locked": self.locked,
            "version": self.model_version,
            "primary_key": list(self.primary_key),
            "load_mode": self.load_mode,
        }


_COLUMNS = "id, name, table_name, primary_key, load_mode, locked, model_version"


class Catalog:
    """Reads and changes the catalog through one pool; model changes also alter the storage's table."""

    def __init__(self, pool: asyncpg.Pool, max_columns: int = 1000) -> None:
        self.pool = pool
        self.max_columns = max_columns

    async def create(
        self, name: str, *, primary_key: list[str] | None = None, load_mode: str = "append"
    ) -> tuple[Storage, str]:
        """A new, empty storage and its push token (only its hash is kept, so this is the one chance to see it)."""
        validate_storage_name(name)
        if load_mode not in LOAD_MODES:
            raise ValueError(f"load mode must be one of {', '.join(LOAD_MODES)}")
        if load_mode == "merge" and not primary_key:
            raise ValueError("merge needs a primary key")
        storage_id = uuid.uuid4()
        token = secrets.token_hex(20)
        table = quote_ident(STORAGE_SCHEMA) + "." + quote_ident(name)
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO headrace.storages (id, name, table_name, primary_key, load_mode)"
                    f" VALUES ($1, $2, $2, $3, $4) RETURNING {_COLUMNS}",
                    storage_id,
                    name,
                    primary_key or [],
                    load_mode,
                )
            except asyncpg.UniqueViolationError as exc:
                raise StorageExists(f"storage {name!r} exists already") from exc
            await conn.execute(
                "INSERT INTO headrace.push_tokens (storage_id, token_sha256) VALUES ($1, $2)",
                storage_id,
                hash_token(token),
            )
            await conn.execute(
                "INSERT INTO headrace.model_versions (storage_id, version, columns) VALUES ($1, 0, '[]')",
                storage_id,
            )
            await conn.execute(create_table_sql(table))
            await conn.execute(transaction_index_sql(table, quote_ident(f"hr_xid_{storage_id.hex}")))
            # Delivered at commit: transform asks the broker for the storage's topic at once (headrace/kafka/clients.py
            # refresh_metadata) instead of at its next periodic metadata refresh.
            await conn.execute("SELECT pg_notify($1, $2)", STORAGE_CREATED_CHANNEL, name)
        assert row is not None  # INSERT … RETURNING gives its row
        return Storage.from_row(row), token

    async def get(self, name: str, conn: Connection | None = None) -> Storage:
        row = await (conn or self.pool).fetchrow(f"SELECT {_COLUMNS} FROM headrace.storages WHERE name = $1", name)
        if row is None:
            raise StorageNotFound(f"no storage named {name!r}")
        return Storage.from_row(row)

    async def get_by_id(self, storage_id: uuid.UUID) -> Storage:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM headrace.storages WHERE id = $1", storage_id)
        if row is None:
            raise StorageNotFound(f"no storage with id {storage_id}")
        return Storage.from_row(row)

    async def list(self, conn: Connection | None = None) -> list[Storage]:
        """Every storage by name; read on `conn` when given (in its transaction), else on the pool."""
        rows = await (conn or self.pool).fetch(f"SELECT {_COLUMNS} FROM headrace.storages ORDER BY name")
        return [Storage.from_row(r) for r in rows]

    async def stats(self, storages: builtins.list[Storage]) -> dict[uuid.UUID, dict[str, Any]]:
        """Per storage, its rows (Postgres' live-tuple statistic, an estimate, read by its function: the view
        pg_stat_user_tables would compute every table's statistics for each storage), its last write (the write time
        of the row of the latest transaction, read through the `_xid` index) and its rejected rows not replayed yet:
        two statements for all of them."""
        if not storages:
            return {}
        parts = [
            f"SELECT ${i + 1}::uuid AS id,"
            f" (SELECT _inserted_at FROM {s.qualified_table} ORDER BY _xid DESC LIMIT 1) AS last_write,"
            f" pg_stat_get_live_tuples('{s.qualified_table}'::regclass) AS rows"
            for i, s in enumerate(storages)
        ]
        found = await self.pool.fetch(" UNION ALL ".join(parts), *(s.id for s in storages))
        rejected = await self.pool.fetch(
            "SELECT storage_id, count(*) FROM headrace.rejected_rows WHERE replayed_at IS NULL GROUP BY storage_id"
        )
        waiting: dict[uuid.UUID, int] = {r["storage_id"]: r["count"] for r in rejected}
        return {
            r["id"]: {"rows": r["rows"], "last_write": r["last_write"], "rejected_waiting": waiting.get(r["id"], 0)}
            for r in found
        }

    async def describe(self, name: str) -> dict[str, Any]:
        """The storage with its current model, as `storage show` and the HTTP API print it."""
        storage = await self.get(name)
        model = await self.model(storage.id)
        return storage.to_json() | {"columns": [{"name": c.key, "type": c.type.value} for c in model.columns]}

    async def set_locked(self, name: str, locked: bool) -> Storage:
        """Lock or unlock the model: while locked, types never change and columns are never dropped."""
        row = await self.pool.fetchrow(
            f"UPDATE headrace.storages SET locked = $2 WHERE name = $1 RETURNING {_COLUMNS}", name, locked
        )
        if row is None:
            raise StorageNotFound(f"no storage named {name!r}")
        return Storage.from_row(row)

    async def rotate_token(self, name: str) -> tuple[Storage, str]:
        """A new push token; the old ones stop working at once (they are kept, revoked, for the record)."""
        storage = await self.get(name)
        token = secrets.token_hex(20)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE headrace.push_tokens SET revoked_at = now() WHERE storage_id = $1 AND revoked_at IS NULL",
                storage.id,
            )
            await conn.execute(
                "INSERT INTO headrace.push_tokens (storage_id, token_sha256) VALUES ($1, $2)",
                storage.id,
                hash_token(token),
            )
        return storage, token

    # `list` below is the method above: the built-in is builtins.list in this class.
    async def history(self, name: str) -> builtins.list[dict[str, Any]]:
        """Every model version, oldest first, with what changed from the one before."""
        storage = await self.get(name)
        rows = await self.pool.fetch(
            "SELECT version, columns, change, created_at FROM headrace.model_versions"
            " WHERE storage_id = $1 ORDER BY version",
            storage.id,
        )
        return [
            {
                "version": r["version"],
                "created_at": r["created_at"],
                "columns": [{"name": c["key"], "type": c["type"]} for c in r["columns"]],
                "change": r["change"],
            }
            for r in rows
        ]

    async def batches(self, name: str, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The storage's latest batches, newest first: state, rows, duplicates dropped, reason of a failure."""
        storage = await self.get(name)
        rows = await self.pool.fetch(
            "SELECT batch_id, load_mode, state, rows_seen, expected_rows, duplicates, reason, created_at, applied_at"
            " FROM headrace.batches WHERE storage_id = $1 ORDER BY created_at DESC LIMIT $2",
            storage.id,
            limit,
        )
        return [dict(r) for r in rows]

    async def token_hashes(self, storage_id: uuid.UUID) -> builtins.list[bytes]:
        rows = await self.pool.fetch(
            "SELECT token_sha256 FROM headrace.push_tokens WHERE storage_id = $1 AND revoked_at IS NULL",
            storage_id,
        )
        return [bytes(r["token_sha256"]) for r in rows]

    async def model(self, storage_id: uuid.UUID, conn: Connection | None = None) -> Model:
        row = await (conn or self.pool).fetchrow(
            "SELECT version, columns FROM headrace.model_versions WHERE storage_id = $1 ORDER BY version DESC LIMIT 1",
            storage_id,
        )
        if row is None:  # every storage has its version 0 from its creation on
            raise StorageNotFound(f"storage {storage_id} not found")
        return Model.from_json(row["columns"], row["version"], self.max_columns)

    async def evolve(self, conn: Connection, storage: Storage, model: Model, change: ModelChange) -> Model:
        """Alter the table and record the new model version; the caller holds the transaction and the lock."""
        table = storage.qualified_table
        clauses = [f"ADD COLUMN {quote_ident(c.name)} {c.type.postgres}" for c in change.added]
        for before, after in change.widened:
            column = quote_ident(after.name)
            expression = widening_expression(column, before.type, after.type)
            clauses.append(f"ALTER COLUMN {column} TYPE {after.type.postgres} USING {expression}")
        if clauses:
            await conn.execute(f"ALTER TABLE {table} {', '.join(clauses)}")
        new_model = model.apply(change)
        await conn.execute(
            "INSERT INTO headrace.model_versions (storage_id, version, columns, change) VALUES ($1, $2, $3, $4)",
            storage.id,
            new_model.version,
            new_model.to_json(),
            change.to_json(),
        )
        await conn.execute(
            "UPDATE headrace.storages SET model_version = $2 WHERE id = $1", storage.id, new_model.version
        )
        # The registry's subject <name>-value gets this version in the same transaction (see headrace.registry.store).
        await register_storage_model(conn, storage.name, new_model)
        return new_model


def widening_expression(column: str, before: ColumnType, after: ColumnType) -> str:
    """SQL turning a column's values into the wider type, the same text Python's to_text would give."""
    if after is ColumnType.FLOAT:
        return f"{column}::double precision"
    if after is ColumnType.DATETIME:
        return f"({column}::timestamp AT TIME ZONE 'UTC')"
    if before is ColumnType.DATETIME:
        return (
            f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
            f" || CASE WHEN extract(microseconds FROM {column})::bigint % 1000000 <> 0"
            f" THEN to_char({column} AT TIME ZONE 'UTC', '.US') ELSE '' END || 'Z'"
        )
    if before is ColumnType.DATE:
        return f"to_char({column}, 'YYYY-MM-DD')"
    return f"{column}::text"
