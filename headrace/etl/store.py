"""A storage's ETL configuration in the catalog (headrace.storages.etl), read and written by name."""

from __future__ import annotations

import asyncpg

from headrace.catalog import StorageNotFound
from headrace.etl.config import EtlConfig


async def get_etl(pool: asyncpg.Pool | asyncpg.Connection, name: str) -> EtlConfig:
    row = await pool.fetchrow("SELECT etl FROM headrace.storages WHERE name = $1", name)
    if row is None:
        raise StorageNotFound(f"no storage named {name!r}")
    return EtlConfig.from_json(row["etl"])


async def set_etl(pool: asyncpg.Pool | asyncpg.Connection, name: str, config: EtlConfig) -> EtlConfig:
    """Store the ETL (already parsed and checked); transform applies it to the events it writes from now on."""
    done = await pool.fetchval(
        "UPDATE headrace.storages SET etl = $2 WHERE name = $1 RETURNING 1", name, config.to_json()
    )
    if done is None:
        raise StorageNotFound(f"no storage named {name!r}")
    return config
