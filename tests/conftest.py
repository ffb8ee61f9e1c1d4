"""Session fixtures: one real broker, one fresh Postgres database and one running platform for the whole run."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from headrace.platform.processes import free_port
from headrace.platform.scratch import ScratchS3, ScratchSftp, fresh_database, running_broker, running_s3, running_sftp
from headrace.postgres import create_pool
from headrace.s3 import S3Connection
from headrace.settings import SERVICES, Settings

REPO = Path(__file__).resolve().parent.parent


def clean_environ() -> dict[str, str]:
    """The environment without any HEADRACE_* a developer's shell may carry."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}


def service_port_env() -> dict[str, str]:
    return {f"HEADRACE_{s.replace('-', '_').upper()}_PORT": str(free_port()) for s in SERVICES}


@dataclass
class RunningPlatform:
    settings: Settings
    env: dict[str, str]
    process: subprocess.Popen
    output: list[str]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "headrace", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def cli_json(self, *args: str) -> object:
        return orjson.loads(self.cli(*args, "--json").stdout)


def start_up(
    env: dict[str, str], args: list[str] | None = None, timeout: float = 90
) -> tuple[subprocess.Popen, list[str]]:
    """Run `headrace up` and return once it printed its ready line (or fail with what it printed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "headrace", "up", *(args or [])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=REPO,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith("Headrace is ready"):
            return process, seen
    process.kill()
    raise AssertionError("headrace up did not get ready:\n" + "\n".join(seen))


def stop_up(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    process.send_signal(sig)
    return process.wait(timeout=timeout)


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("headrace")


@pytest.fixture(scope="session")
def kafka_bootstrap(work_dir: Path) -> Iterator[str]:
    with running_broker(work_dir) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def database_url(work_dir: Path) -> Iterator[str]:
    with fresh_database(work_dir) as url:
        yield url


@pytest.fixture(scope="session")
def platform(work_dir: Path, kafka_bootstrap: str, database_url: str) -> Iterator[RunningPlatform]:
    """`headrace up` against the session's broker and database, with every service on a free port."""
    env = (
        clean_environ()
        | service_port_env()
        | {
            "HEADRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "HEADRACE_DATABASE_URL": database_url,
            "HEADRACE_DATA_DIR": str(work_dir / "platform"),
            "HEADRACE_LOG_LEVEL": "INFO",
        }
    )
    process, lines = start_up(env)
    settings = Settings(**{k.removeprefix("HEADRACE_").lower(): v for k, v in env.items() if k.startswith("HEADRACE_")})
    yield RunningPlatform(settings, env, process, lines)
    stop_up(process)


@pytest.fixture(scope="session")
def settings(kafka_bootstrap: str, database_url: str, work_dir: Path) -> Settings:
    """Settings for code the tests run in-process, against the session's broker and database."""
    return Settings(kafka_bootstrap=kafka_bootstrap, database_url=database_url, data_dir=work_dir / "inproc")


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    from headrace.postgres import migrate

    pool = await create_pool(settings, max_size=4)
    await migrate(pool)
    yield pool
    await pool.close()


@pytest.fixture
def storage_name() -> str:
    """A storage name no other test uses."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[ScratchS3]:
    """moto's standalone S3 server, over HTTP on a loopback port."""
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def sftp_server(work_dir: Path) -> Iterator[ScratchSftp]:
    """OpenSSH's sshd with its own config, host key and authorized key, on a loopback port."""
    with running_sftp(work_dir) as server:
        yield server


def s3_client(server: ScratchS3) -> Any:
    return S3Connection(
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    ).client()


@pytest.fixture
async def bucket(s3_server: ScratchS3) -> str:
    """A new, empty bucket on the session's S3 server."""
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    async with s3_client(s3_server) as client:
        await client.create_bucket(Bucket=name)
    return name
