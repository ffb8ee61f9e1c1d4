"""The SQL of each load mode: append by COPY, merge by upsert from a temporary table, batches from staging."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headrace.catalog import Storage
from headrace.catalog.columns import WRITTEN_SYSTEM_COLUMNS
from headrace.models import Model
from headrace.models.inference import convert
from headrace.postgres import Connection, quote_ident
from transform.columnar import Columns
from transform.events import Event
from transform.planning import row_tuples, table_columns

STORAGE_SCHEMA = "storage"


def _count(status: str) -> int:
    return int(status.split()[-1])


async def append_rows(
    conn: Connection, storage: Storage, model: Model, rows: list[tuple[Event, dict[str, Any]]], now: datetime
) -> int:
    """Every event a row, COPYed straight into the table (measured faster than staging + INSERT … SELECT)."""
    if not rows:
        return 0
    tuples = row_tuples(model, rows, now)
    await conn.copy_records_to_table(
        storage.table_name, schema_name=STORAGE_SCHEMA, columns=table_columns(model), records=tuples
    )
    return len(tuples)


async def append_columns(conn: Connection, storage: Storage, model: Model, columns: Columns, now: datetime) -> int:
    """The fast path's append: the same COPY, its row tuples zipped from the columns (no Python code per row)."""
    if not len(columns):
        return 0
    await conn.copy_records_to_table(
        storage.table_name, schema_name=STORAGE_SCHEMA, columns=table_columns(model), records=columns.records(now)
    )
    return len(columns)


async def merge_columns(conn: Connection, storage: Storage, model: Model, columns: Columns, now: datetime) -> int:
    """The fast path's merge: every upsert COPYed into a temporary table, then the last event of each key (by stream
    position, as merge_rows picks it) upserted in one statement; the rows written."""
    if not len(columns):
        return 0
    table = storage.qualified_table
    names = table_columns(model)
    await conn.execute(f"CREATE TEMP TABLE hr_merge (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    await conn.copy_records_to_table("hr_merge", columns=names, records=columns.records(now))
    status = await conn.execute(_upsert_sql(storage, model, "hr_merge", last_per_key=True))
    await conn.execute("DROP TABLE hr_merge")
    return _count(status)


def _upsert_sql(storage: Storage, model: Model, source: str, last_per_key: bool) -> str:
    """INSERT … ON CONFLICT of a staged table's rows into the storage (the last row of each key, if asked)."""
    columns = table_columns(model)
    quoted = ", ".join(quote_ident(c) for c in columns)
    pk_names = [model.by_key[k].name for k in storage.primary_key]
    conflict = ", ".join(quote_ident(c) for c in pk_names)
    updates = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns if c not in pk_names)
    select = f"SELECT {quoted} FROM {source}"
    if last_per_key:
        select = (
            f"SELECT DISTINCT ON ({conflict}) {quoted} FROM {source}"
            f" ORDER BY {conflict}, _source_partition DESC, _source_offset DESC"
        )
    # `_xid` is left to its default in the insert, and set again on update: an updated row is exported again.
    return (
        f"INSERT INTO {storage.qualified_table} ({quoted}) {select}"
        f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}, _xid = pg_current_xact_id()"
    )


async def merge_rows(
    conn: Connection,
    storage: Storage,
    model: Model,
    rows: list[tuple[Event, dict[str, Any]]],
    deletes: list[tuple[Event, dict[str, Any]]],
    now: datetime,
) -> tuple[int, int]:
    """Upsert the last event of each key and delete keys whose last event is a delete; (rows written, deleted)."""
    if not all(k in model.by_key for k in storage.primary_key):
        return 0, 0  # no row has ever carried the key, so there is nothing to upsert or delete
    pk_columns = [model.by_key[k] for k in storage.primary_key]
    # The last event of each key wins, in partition then offset order (one key's events share a partition).
    last: dict[tuple[Any, ...], tuple[bool, Event, dict[str, Any]]] = {}
    ordered = sorted(
        [(False, e, r) for e, r in rows] + [(True, e, r) for e, r in deletes],
        key=lambda item: (item[1].partition, item[1].offset),
    )
    for is_delete, event, record in ordered:
        key = tuple(convert(record[c.key], c.type) for c in pk_columns)
        last[key] = (is_delete, event, record)
    upserts = [(e, r) for is_delete, e, r in last.values() if not is_delete]
    removed = [key for key, (is_delete, _, _) in last.items() if is_delete]
    table = storage.qualified_table
    deleted = 0
    if removed:
        arrays = [[key[i] for key in removed] for i in range(len(pk_columns))]
        unnest = ", ".join(f"${i + 1}::{c.type.postgres}[]" for i, c in enumerate(pk_columns))
        names = ", ".join(f"k{i}" for i in range(len(pk_columns)))
        match = " AND ".join(f"t.{quote_ident(c.name)} = d.k{i}" for i, c in enumerate(pk_columns))
        sql = f"DELETE FROM {table} t USING unnest({unnest}) AS d({names}) WHERE {match}"
        deleted = _count(await conn.execute(sql, *arrays))
    if not upserts:
        return 0, deleted
    tuples = row_tuples(model, upserts, now)
    await conn.execute(f"CREATE TEMP TABLE hr_merge (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    await conn.copy_records_to_table("hr_merge", columns=table_columns(model), records=tuples)
    await conn.execute(_upsert_sql(storage, model, "hr_merge", last_per_key=False))
    await conn.execute("DROP TABLE hr_merge")
    return len(tuples), deleted


async def apply_staged(
    conn: Connection, storage: Storage, model: Model, staging: str, mode: str, now: datetime
) -> tuple[int, int]:
    """Move a complete staged batch into the storage by its load mode, in the caller's transaction; (rows, deleted)."""
    table = storage.qualified_table
    columns = [quote_ident(c.name) for c in model.columns]
    targets = ", ".join([*WRITTEN_SYSTEM_COLUMNS, *columns])
    # _overflow carries a staged delete's mark, so it is copied only for rows that are not deletes.
    values = (
        "_event_id, _received_at, $1::timestamptz, CASE WHEN _overflow ? '_op' THEN NULL ELSE _overflow END,"
        f" _source_partition, _source_offset{''.join(', ' + c for c in columns)}"
    )
    if mode in ("replace", "append"):
        deleted = _count(await conn.execute(f"DELETE FROM {table}")) if mode == "replace" else 0
        status = await conn.execute(
            f"INSERT INTO {table} ({targets}) SELECT {values} FROM {staging}"
            " ORDER BY _source_partition, _source_offset",
            now,
        )
        return _count(status), deleted
    # merge: the last event of each key wins; a key whose last event is a delete is removed.
    keys = [quote_ident(model.by_key[k].name) for k in storage.primary_key]
    key_list = ", ".join(keys)
    last = (
        f"SELECT DISTINCT ON ({key_list}) * FROM {staging}"
        f" ORDER BY {key_list}, _source_partition DESC, _source_offset DESC"
    )
    match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)
    await conn.execute(f"DELETE FROM {table} t USING ({last}) s WHERE {match}")
    deleted = await conn.fetchval(f"SELECT count(*) FROM ({last}) s WHERE s._overflow ? '_op'")
    status = await conn.execute(
        f"INSERT INTO {table} ({targets}) SELECT {values} FROM ({last}) s"
        " WHERE NOT coalesce(s._overflow ? '_op', false) ORDER BY _source_partition, _source_offset",
        now,
    )
    return _count(status), int(deleted)
