"""`headrace up` makes its credentials on first start, keeps them 0600 in the data dir, and shows none but the token."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from headrace.platform.postgres import EmbeddedPostgres
from headrace.platform.processes import free_port, terminate
from headrace.settings import ADMIN_TOKEN_FILE, POSTGRES_PASSWORD_FILE, SECRET_KEY_FILE, url_with_password
from tests.conftest import clean_environ
from tests.platform.helpers import LocalPlatform, embedded_env, push

Launch = Callable[[dict[str, str], Path], LocalPlatform]
CREDENTIAL_FILES = (ADMIN_TOKEN_FILE, SECRET_KEY_FILE, POSTGRES_PASSWORD_FILE)


def _kept(data_dir: Path) -> dict[str, str]:
    """The credentials in the data dir, each checked to be readable by its owner only."""
    found = {}
    for name in CREDENTIAL_FILES:
        path = data_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        found[name] = path.read_text().strip()
        assert len(found[name]) >= 40, name  # secrets.token_urlsafe(32): 43 characters
    return found


def _cli_with_data_dir_only(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI from another process that knows only where the data dir is: no token, no DSN in its environment."""
    env = clean_environ(credentials=False) | {"HEADRACE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _runtime_database_url(data_dir: Path) -> str:
    return orjson.loads((data_dir / "runtime.json").read_bytes())["settings"]["database_url"]


async def _refuses_without_password(url: str) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url, password="", timeout=10)


def test_first_start_makes_the_credentials_later_starts_reuse_them_and_no_output_shows_a_secret(
    data_dir: Path, launched: Launch
) -> None:
    env = embedded_env()
    platform = launched(env, data_dir)
    kept = _kept(data_dir)
    token, key, password = (kept[name] for name in CREDENTIAL_FILES)
    first_output = "\n".join(platform.up.lines)
    assert first_output.count(token) == 1  # printed once, on the first start
    assert key not in first_output and password not in first_output
    assert "postgres:***@127.0.0.1" in first_output

    runtime = (data_dir / "runtime.json").read_text()
    assert stat.S_IMODE((data_dir / "runtime.json").stat().st_mode) == 0o600
    assert not any(secret in runtime for secret in (token, key, password))
    asyncio.run(_refuses_without_password(_runtime_database_url(data_dir)))

    # The CLI finds the DSN (runtime.json plus the password file) and the token from the data dir alone.
    storage = f"creds_{uuid.uuid4().hex[:8]}"
    created = _cli_with_data_dir_only(data_dir, "storage", "create", storage, "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    status = _cli_with_data_dir_only(data_dir, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert not any(secret in status.stdout for secret in (token, key, password))
    push(orjson.loads(created.stdout)["push_url"], [{"_id": "first"}])
    platform.wait_stored(storage, {"first"})
    ingest = f"http://127.0.0.1:{env['HEADRACE_INGEST_PORT']}"
    listed = httpx.get(f"{ingest}/api/storages", headers=platform.admin_headers, timeout=30)
    assert listed.status_code == 200 and storage in listed.text
    assert platform.stop() == 0

    platform = launched(env, data_dir)
    assert _kept(data_dir) == kept  # the same credentials, not new ones
    second_output = "\n".join(platform.up.lines)
    assert not any(secret in second_output for secret in (token, key, password))
    assert f"{ADMIN_TOKEN_FILE}" in second_output  # it says where the token is kept
    status = _cli_with_data_dir_only(data_dir, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert platform.stored_ids(storage) == ["first"]
    assert platform.stop() == 0


class _EarlierEmbeddedPostgres(EmbeddedPostgres):
    """The embedded Postgres as earlier versions ran it: initdb trusting every local connection, no password."""

    initdb_auth = "trust"

    def _secure(self, bin_path: Path) -> None:
        pass


async def _make_trusting_data_dir(data_dir: Path) -> None:
    postgres = _EarlierEmbeddedPostgres(data_dir, "127.0.0.1", free_port(), data_dir / "postgres.log")
    await postgres.start()
    try:
        conn = await asyncpg.connect(postgres.url, password="")
        try:
            await conn.execute("CREATE TABLE kept_from_before (x int)")
        finally:
            await conn.close()
    finally:
        assert postgres.process is not None
        await terminate(postgres.process, signal.SIGINT, timeout=30)


def test_a_trusting_data_dir_of_an_earlier_version_gets_a_password(data_dir: Path, launched: Launch) -> None:
    data_dir.mkdir(parents=True)
    asyncio.run(_make_trusting_data_dir(data_dir))
    assert not (data_dir / POSTGRES_PASSWORD_FILE).exists()

    platform = launched(embedded_env(), data_dir)
    password = _kept(data_dir)[POSTGRES_PASSWORD_FILE]
    assert "trust" not in (data_dir / "postgres" / "pg_hba.conf").read_text()
    url = _runtime_database_url(data_dir)

    async def check() -> None:
        await _refuses_without_password(url)
        conn = await asyncpg.connect(url_with_password(url, password))
        try:
            assert await conn.fetchval("SELECT to_regclass('kept_from_before') IS NOT NULL")
        finally:
            await conn.close()

    asyncio.run(check())
    listed = _cli_with_data_dir_only(data_dir, "storage", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert platform.stop() == 0
    assert os.listdir(data_dir / "postgres")  # the data itself is kept
