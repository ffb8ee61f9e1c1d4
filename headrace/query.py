"""Reads a storage's rows back as JSON-ready dicts keyed by the original field names."""

from __future__ import annotations

from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.postgres import quote_ident

SYSTEM_COLUMNS = ("_event_id", "_received_at", "_inserted_at")


async def fetch_rows(catalog: Catalog, storage: Storage, limit: int | None = None) -> list[dict[str, Any]]:
    """Every row in insertion order: system columns under their `_` names, then the model's fields."""
    model = await catalog.model(storage.id)
    selected = [*SYSTEM_COLUMNS, "_overflow", *(c.name for c in model.columns)]
    sql = (
        f"SELECT {', '.join(quote_ident(c) for c in selected)} FROM {storage.qualified_table}"
        " ORDER BY _inserted_at, _event_id"
    )
    args: list[Any] = []
    if limit is not None:
        sql += " LIMIT $1"
        args.append(limit)
    rows: list[asyncpg.Record] = await catalog.pool.fetch(sql, *args)
    out = []
    for row in rows:
        item: dict[str, Any] = {name: row[name] for name in SYSTEM_COLUMNS}
        for column in model.columns:
            item[column.key] = row[column.name]
        for key, value in (row["_overflow"] or {}).items():
            item.setdefault(key, value)
        out.append(item)
    return out
