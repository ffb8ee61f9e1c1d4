"""Throw-away servers for tests and benchmarks: a Tansu broker, a fresh Postgres database, S3 and SFTP."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from headrace.platform.broker import EmbeddedBroker
from headrace.platform.postgres import EmbeddedPostgres
from headrace.platform.processes import free_port, spawn, terminate, wait_for_port

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
        admin_url = embedded.dsn("postgres")
    name = f"headrace_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(admin_url, name))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_drop_database(admin_url, name))
        if embedded is not None and embedded.process is not None:
            import signal

            asyncio.run(terminate(embedded.process, signal.SIGINT))


@dataclass(frozen=True)
class ScratchS3:
    """Where a throw-away S3 API server listens, and the (fake) credentials it accepts."""

    endpoint_url: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"


@contextmanager
def running_s3() -> Iterator[ScratchS3]:
    """moto's standalone S3 API server on a free loopback port: real HTTP, real SigV4, in-memory buckets."""
    import logging

    from moto.server import ThreadedMotoServer

    # moto's werkzeug logs every request line to stderr, which drowns test output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield ScratchS3(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@dataclass(frozen=True)
class ScratchSftp:
    """Where a throw-away OpenSSH server listens, and the client key it trusts."""

    host: str
    port: int
    user: str
    client_key_path: Path
    host_public_key: str
    root: Path  # a directory the user may write to; absolute paths on the server

    @property
    def client_key(self) -> str:
        return self.client_key_path.read_text()


SSHD = "/usr/sbin/sshd"


def _ssh_keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextmanager
def running_sftp(work_dir: Path) -> Iterator[ScratchSftp]:
    """OpenSSH's sshd on a free loopback port, with its own config, host key and one authorised client key.

    It runs as whoever runs the tests (root in CI); that user logs in with the generated key only.
    """
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is missing: install the openssh-server package")
    base = work_dir / f"sshd-{uuid.uuid4().hex[:8]}"
    base.mkdir(parents=True)
    host_key, client_key = base / "host_key", base / "client_key"
    _ssh_keygen(host_key)
    _ssh_keygen(client_key)
    root = base / "files"
    root.mkdir()
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {client_key}.pub",
                f"PidFile {base / 'sshd.pid'}",
                "Subsystem sftp internal-sftp",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        # sshd refuses to start without its privilege-separation directory, which Debian creates only at boot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = spawn([SSHD, "-D", "-e", "-f", str(config)], base / "sshd.log")
    try:
        asyncio.run(wait_for_port("127.0.0.1", port, 15, process))
        yield ScratchSftp(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            client_key_path=client_key,
            host_public_key=(base / "host_key.pub").read_text().strip(),
            root=root,
        )
    finally:
        asyncio.run(terminate(process))
