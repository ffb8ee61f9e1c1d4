"""Applies the numbered SQL files in headrace/postgres/sql/ once each, under an advisory lock."""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x4845414452414345


async def migrate(pool: asyncpg.Pool) -> None:
    """Bring the catalog schema up to date; safe to call from every service at start-up."""
    files = sorted(
        (f for f in resources.files("headrace.postgres").joinpath("sql").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE SCHEMA IF NOT EXISTS headrace")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS headrace.schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["name"] for r in await conn.fetch("SELECT name FROM headrace.schema_migrations")}
        for file in files:
            if file.name in applied:
                continue
            await conn.execute(file.read_text())
            await conn.execute("INSERT INTO headrace.schema_migrations (name) VALUES ($1)", file.name)
            log.info("applied migration", extra={"migration": file.name})
