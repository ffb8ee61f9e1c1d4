"""Deleting a storage end to end: refused while a collector or an export names it, else all it had, then its topic."""

from __future__ import annotations

from typing import Any

from headrace.catalog.storages import STAGING_SCHEMA, Catalog, Storage, StorageNotFound
from headrace.kafka import Topics, delete_topics
from headrace.postgres import Connection, quote_ident
from headrace.registry import delete_storage_subject, storage_subject
from headrace.settings import Settings


class StorageInUse(RuntimeError):
    """Collectors or exports name the storage: deleting it would break them (answered 409, naming them)."""

    def __init__(self, name: str, collectors: list[str], exports: list[str]) -> None:
        users = [f"collector {c!r}" for c in collectors] + [f"export {e!r}" for e in exports]
        super().__init__(
            f"storage {name!r} is used by {', '.join(users)}: delete them (or take the storage out of the export's"
            " sources) first"
        )
        self.collectors = collectors
        self.exports = exports


async def users_of(conn: Connection, name: str) -> tuple[list[str], list[str]]:
    """The collectors loading into the storage and the exports naming it (an export of `all` storages names none)."""
    collectors = await conn.fetch(
        "SELECT name FROM headrace.collectors WHERE definition->>'storage' = $1 ORDER BY name", name
    )
    exports = await conn.fetch(
        "SELECT name FROM headrace.exports WHERE jsonb_typeof(definition->'sources') = 'array'"
        " AND definition->'sources' ? $1 ORDER BY name",
        name,
    )
    return [r["name"] for r in collectors], [r["name"] for r in exports]


async def delete_storage(settings: Settings, catalog: Catalog, name: str) -> dict[str, Any]:
    """Delete the storage, its table and staging tables, tokens, model versions, batches, event ids, rejected rows,
    positions and registry subject in one transaction, then its ingest topic.

    Postgres first: once the storage is gone, events still on its topic go to the dead letters ("no storage for this
    topic"), and deleting the topic then drops them. A topic that cannot be deleted is said in the answer.
    """
    topic = Topics(settings.topic_prefix).ingest(name)
    async with catalog.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, name, table_name, primary_key, load_mode, locked, model_version FROM headrace.storages"
            " WHERE name = $1 FOR UPDATE",
            name,
        )
        if row is None:
            raise StorageNotFound(f"no storage named {name!r}")
        storage = Storage.from_row(row)
        collectors, exports = await users_of(conn, name)
        if collectors or exports:
            raise StorageInUse(name, collectors, exports)
        for batch in await conn.fetch("SELECT staging_table FROM headrace.batches WHERE storage_id = $1", storage.id):
            await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(STAGING_SCHEMA)}.{quote_ident(batch[0])}")
        await conn.execute("DELETE FROM headrace.batch_events WHERE storage_id = $1", storage.id)
        await conn.execute(f"DROP TABLE IF EXISTS {storage.qualified_table}")
        # Cascades to its push tokens, model versions, batches, event ids and rejected rows.
        await conn.execute("DELETE FROM headrace.storages WHERE id = $1", storage.id)
        await conn.execute("DELETE FROM headrace.stream_positions WHERE topic = $1", topic)
        await conn.execute("DELETE FROM headrace.topic_incarnations WHERE topic = $1", topic)
        versions = await delete_storage_subject(conn, name)
    deleted: dict[str, Any] = {
        "deleted": name,
        "id": str(storage.id),
        "subject": {"name": storage_subject(name), "versions": versions},
        "topic": {"name": topic, "deleted": True},
    }
    try:
        await delete_topics(settings, [topic])
    except Exception as exc:  # the storage is gone whatever the cluster says; the topic is what is left
        deleted["topic"] |= {"deleted": False, "error": f"{type(exc).__name__}: {exc}"}
    return deleted
