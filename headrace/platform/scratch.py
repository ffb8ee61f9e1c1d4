"""Throw-away servers for tests and benchmarks: a Tansu broker and a fresh Postgres database."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from headrace.platform.broker import EmbeddedBroker
from headrace.platform.postgres import EmbeddedPostgres
from headrace.platform.processes import free_port, terminate

# The machine's Postgres; when it is not there the tests run an embedded one instead.
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def running_broker(log_dir: Path) -> Iterator[str]:
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_dir / "broker.log")
    asyncio.run(broker.start())
    try:
        yield broker.bootstrap
    finally:
        assert broker.process is not None
        asyncio.run(terminate(broker.process))


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def fresh_database(work_dir: Path) -> Iterator[str]:
    """A new, empty database for this test session: on $HEADRACE_TEST_ADMIN_URL's server, else embedded."""
    admin_url = os.environ.get("HEADRACE_TEST_ADMIN_URL", DEFAULT_ADMIN_URL)
    embedded = None
    if not asyncio.run(_reachable(admin_url)):
        embedded = EmbeddedPostgres(work_dir, "127.0.0.1", free_port(), work_dir / "postgres.log")
        asyncio.run(embedded.start())
        admin_url = f"postgresql://postgres@127.0.0.1:{embedded.port}/postgres"
    name = f"headrace_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(admin_url, name))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_drop_database(admin_url, name))
        if embedded is not None and embedded.process is not None:
            import signal

            asyncio.run(terminate(embedded.process, signal.SIGINT))
