"""The asyncpg pool every service uses, with JSON codecs, and identifier quoting for generated SQL."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from headrace.settings import Settings

# A session queries run on: a connection of its own (`connect`) or one a pool lends (`pool.acquire()`), which is a
# proxy, not an asyncpg.Connection, though it answers the same calls.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary codecs, so that COPY (which is always binary in asyncpg) can carry JSON too.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        format="binary",
    )
    await conn.set_type_codec("json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads, format="binary")


async def create_pool(
    settings: Settings, *, min_size: int = 1, max_size: int | None = None, application_name: str = "headrace"
) -> asyncpg.Pool:
    """A pool whose sessions carry `application_name`, so pg_stat_activity tells which service holds them."""
    return await asyncpg.create_pool(
        settings.require_database_url(),
        min_size=min_size,
        max_size=max_size or settings.database_pool_size,
        init=_init_connection,
        command_timeout=60,
        server_settings={"application_name": application_name},
    )


async def connect(
    settings: Settings, *, application_name: str | None = None, command_timeout: float | None = 60
) -> asyncpg.Connection:
    """One connection outside the pool, with the pool's codecs: for work that holds a session for long."""
    server_settings = {"application_name": application_name} if application_name else None
    conn = await asyncpg.connect(
        settings.require_database_url(), command_timeout=command_timeout, server_settings=server_settings
    )
    await _init_connection(conn)
    return conn


async def postgres_reachable(pool: asyncpg.Pool, timeout: float = 3.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await pool.fetchval("SELECT 1")
        return True
    except Exception:
        return False


def quote_ident(name: str) -> str:
    """Quote an identifier for generated SQL; every table and column name goes through here."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'
