"""Postgres-source collectors against real tables: snapshot replaces, appends take new rows, updates merge."""

from __future__ import annotations

import asyncpg

from headrace.catalog import Catalog
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition, CollectorStore
from ingest.collectors.runner import CollectorRunner
from ingest.collectors.sources import extractor_for
from tests.collectors.conftest import make_collector, rows_become


async def test_snapshot_replaces_the_storage(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    database_url: str,
    source_table: str,
    storage_name: str,
) -> None:
    await pool.execute(f"CREATE TABLE {source_table} (id int PRIMARY KEY, name text, price numeric(8,2))")
    await pool.execute(f"INSERT INTO {source_table} VALUES (1, 'a', 1.50), (2, 'b', 2.25), (3, 'c', 3)")
    name = await make_collector(
        settings,
        pool,
        name=source_table,
        storage=storage_name,
        source={"kind": "postgres", "dsn": database_url, "table": f"public.{source_table}"},
    )
    first = await runner.run(name)
    assert [b["rows"] for b in first["batches"]] == [3]
    await rows_become(pool, storage_name, ("id", "name", "price"), [(1, "a", 1.5), (2, "b", 2.25), (3, "c", 3)])

    await pool.execute(f"DELETE FROM {source_table} WHERE id = 1")
    await pool.execute(f"UPDATE {source_table} SET name = 'B' WHERE id = 2")
    await pool.execute(f"INSERT INTO {source_table} VALUES (4, 'd', 4)")
    await runner.run(name)
    await rows_become(pool, storage_name, ("id", "name", "price"), [(2, "B", 2.25), (3, "c", 3), (4, "d", 4)])

    store = CollectorStore(pool, settings)
    batches = await store.batches(await store.get(name))
    assert [(b["status"], b["rows"], b["load_mode"]) for b in batches] == [("sent", 3, "replace")] * 2
    assert batches[0]["batch_id"] != batches[1]["batch_id"]


async def test_incremental_appends_take_only_new_rows(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    database_url: str,
    source_table: str,
    storage_name: str,
) -> None:
    await pool.execute(f"CREATE TABLE {source_table} (id bigserial PRIMARY KEY, event text)")
    await pool.execute(f"INSERT INTO {source_table} (event) VALUES ('a'), ('b')")
    name = await make_collector(
        settings,
        pool,
        name=source_table,
        storage=storage_name,
        extract_mode="incremental-appends",
        cursor_column="id",
        source={"kind": "postgres", "dsn": database_url, "table": source_table},
    )
    assert [b["rows"] for b in (await runner.run(name))["batches"]] == [2]
    assert (await runner.run(name))["batches"] == []  # nothing new: no batch
    await pool.execute(f"INSERT INTO {source_table} (event) VALUES ('c'), ('d'), ('e')")
    assert [b["rows"] for b in (await runner.run(name))["batches"]] == [3]
    await rows_become(pool, storage_name, ("id", "event"), [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")])
    collector = await CollectorStore(pool, settings).get(name)
    assert collector.cursor == {"type": "int", "value": 5}


async def test_incremental_updates_end_equal_to_the_source(
    runner: CollectorRunner,
    settings: Settings,
    pool: asyncpg.Pool,
    database_url: str,
    source_table: str,
    storage_name: str,
) -> None:
    await pool.execute(
        f"CREATE TABLE {source_table} (id int PRIMARY KEY, status text, deleted boolean NOT NULL DEFAULT false,"
        " updated_at timestamptz NOT NULL)"
    )
    await pool.execute(
        f"INSERT INTO {source_table} VALUES (1, 'new', false, '2024-01-01T00:00:01Z'),"
        " (2, 'new', false, '2024-01-01T00:00:02Z'), (3, 'new', false, '2024-01-01T00:00:03Z'),"
        " (4, 'new', false, '2024-01-01T00:00:04Z')"
    )
    name = await make_collector(
        settings,
        pool,
        name=source_table,
        storage=storage_name,
        extract_mode="incremental-updates",
        cursor_column="updated_at",
        primary_key=["id"],
        soft_delete_column="deleted",
        delete_missing=True,
        source={"kind": "postgres", "dsn": database_url, "query": f"SELECT * FROM {source_table}"},
    )
    await runner.run(name)
    await rows_become(pool, storage_name, ("id", "status"), [(1, "new"), (2, "new"), (3, "new"), (4, "new")])

    # An update, an insert, a soft delete (by the flag) and a hard delete (found by comparing keys).
    await pool.execute(f"UPDATE {source_table} SET status = 'paid', updated_at = '2024-01-02T00:00:00Z' WHERE id = 1")
    await pool.execute(f"INSERT INTO {source_table} VALUES (5, 'new', false, '2024-01-02T00:00:01Z')")
    await pool.execute(f"UPDATE {source_table} SET deleted = true, updated_at = '2024-01-02T00:00:02Z' WHERE id = 2")
    await pool.execute(f"DELETE FROM {source_table} WHERE id = 3")
    result = await runner.run(name)
    assert result["batches"][0]["deletes"] >= 2
    source = [
        (r["id"], r["status"]) for r in await pool.fetch(f"SELECT id, status FROM {source_table} WHERE NOT deleted")
    ]
    await rows_become(pool, storage_name, ("id", "status"), source)
    assert sorted(source) == [(1, "paid"), (4, "new"), (5, "new")]


async def _read(
    definition: CollectorDefinition, batch: dict, settings: Settings, catalog: Catalog, storage_name: str
) -> list[dict]:
    """The records of one read of a batch, in the order that gives them their event ids (`<batch id>:<index>`)."""
    extractor = extractor_for(definition, settings, catalog.pool)
    storage = await catalog.get(storage_name)
    return [record async for records in extractor.extract(batch, catalog, storage) for record in records]


async def test_two_reads_of_a_batch_give_the_same_ids_to_the_same_rows(
    settings: Settings, pool: asyncpg.Pool, database_url: str, source_table: str, storage_name: str
) -> None:
    """A batch sent again (after a crash) must be the same rows under the same ids, though the table was
    physically reordered in between: here by UPDATEs, which write new row versions at the end of the heap."""
    keyed, bare = source_table, f"{source_table}_bare"
    await pool.execute(f"CREATE TABLE {keyed} (id int PRIMARY KEY, name text, updated_at int)")
    await pool.execute(f"INSERT INTO {keyed} SELECT i, 'n' || i, i % 7 FROM generate_series(1, 300) i")
    # No primary key, a type without ordering (json) and duplicate rows: ordered by every column.
    await pool.execute(f"CREATE TABLE {bare} (shop text, doc json, n int)")
    await pool.execute(
        f"INSERT INTO {bare} SELECT 's' || (i % 13), json_build_object('i', i % 5), i % 11"
        " FROM generate_series(1, 300) i"
    )
    await make_collector(
        settings,
        pool,
        name=source_table,
        storage=storage_name,
        source={"kind": "postgres", "dsn": database_url, "table": keyed},
    )
    snapshot = {"cursor_from": None, "cursor_to": None}
    reads = [  # (source, extract mode, batch, rows it holds)
        ({"table": keyed}, "snapshot", snapshot, 300),
        ({"table": bare}, "snapshot", snapshot, 300),
        (
            {"query": f"SELECT b.n AS id, b.doc, k.* FROM {bare} b JOIN {keyed} k ON k.id = b.n"},
            "snapshot",
            snapshot,
            273,
        ),
        ({"table": keyed}, "incremental-appends", {"cursor_from": None, "cursor_to": {"type": "int", "value": 4}}, 214),
    ]
    definitions = [
        CollectorDefinition.model_validate(
            {
                "name": "reads",
                "storage": storage_name,
                "extract_mode": mode,
                "cursor_column": None if mode == "snapshot" else "updated_at",
                "source": {"kind": "postgres", "dsn": database_url, **source},
            }
        )
        for source, mode, _, _ in reads
    ]
    catalog = Catalog(pool)
    first = [
        await _read(d, batch, settings, catalog, storage_name)
        for d, (_, _, batch, _) in zip(definitions, reads, strict=True)
    ]
    assert [len(records) for records in first] == [rows for *_, rows in reads]
    await pool.execute(f"UPDATE {keyed} SET name = name WHERE id % 2 = 0")
    await pool.execute(f"UPDATE {bare} SET n = n WHERE n % 2 = 0")
    second = [
        await _read(d, batch, settings, catalog, storage_name)
        for d, (_, _, batch, _) in zip(definitions, reads, strict=True)
    ]
    for before, after in zip(first, second, strict=True):
        assert after == before
