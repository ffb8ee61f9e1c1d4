"""Session fixtures: one real broker, one fresh Postgres database and one running platform for the whole run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from headrace.platform.processes import free_port
from headrace.platform.scratch import ScratchS3, ScratchSftp, fresh_database, running_broker, running_s3, running_sftp
from headrace.platform.scratch_ftp import ScratchFtp, running_ftp
from headrace.postgres import create_pool
from headrace.s3 import S3Connection
from headrace.settings import SERVICES, Settings
from tests.file_servers import KINDS, FileServer

REPO = Path(__file__).resolve().parent.parent


# The credentials every test platform runs with: the admin token every management route asks for, the key
# stored credentials are encrypted with, and the loopback hosts the test servers (S3, SFTP, Postgres) live on.
TEST_ADMIN_TOKEN = f"test-admin-{uuid.uuid4().hex}"
TEST_SECRET_KEY = f"test-secret-{uuid.uuid4().hex}"
TEST_CREDENTIALS = {
    "HEADRACE_ADMIN_TOKEN": TEST_ADMIN_TOKEN,
    "HEADRACE_SECRET_KEY": TEST_SECRET_KEY,
    "HEADRACE_OUTBOUND_ALLOW": "127.0.0.1,::1,localhost",
}
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}


def clean_environ(credentials: bool = True) -> dict[str, str]:
    """The environment without any HEADRACE_* a developer's shell may carry, with the test credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    return env | TEST_CREDENTIALS if credentials else env


def service_port_env() -> dict[str, str]:
    return {f"HEADRACE_{s.replace('-', '_').upper()}_PORT": str(free_port()) for s in SERVICES}


@dataclass
class RunningPlatform:
    settings: Settings
    env: dict[str, str]
    process: subprocess.Popen
    output: list[str]

    @property
    def client_env(self) -> dict[str, str]:
        """All a client of the platform gets: the services' URLs and the admin token. No database URL, no broker,
        and a data dir of its own with no runtime record: the CLI and the client speak only to the services."""
        urls = {f"HEADRACE_{s.replace('-', '_').upper()}_URL": self.settings.service_url(s) for s in SERVICES}
        data_dir = Path(self.env["HEADRACE_DATA_DIR"]).with_name("client-only")
        return (
            clean_environ(credentials=False)
            | urls
            | {
                "HEADRACE_ADMIN_TOKEN": TEST_ADMIN_TOKEN,
                "HEADRACE_DATA_DIR": str(data_dir),
            }
        )

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """The `headrace` command as a client of this platform (client_env)."""
        done = subprocess.run(
            [sys.executable, "-m", "headrace", *args],
            env=self.client_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            # What the command said is the failure's explanation: a CalledProcessError would not show it.
            raise AssertionError(f"headrace {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def cli_json(self, *args: str) -> object:
        return orjson.loads(self.cli(*args, "--json").stdout)


class UpProcess:
    """`headrace up` in a child process, its output gathered line by line as it comes, for as long as it runs."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "headrace", "up", *(args or [])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self._closed = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._closed = True
            self._new_line.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str | None:
        """The first line so far or to come that satisfies the predicate; None if output ends or time runs out first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return None
                self._new_line.wait(left)

    def wait_ready(self, timeout: float = 90) -> None:
        if self.wait_for_line(lambda line: line.startswith("Headrace is ready"), timeout) is None:
            self.process.kill()
            raise AssertionError("headrace up did not get ready:\n" + "\n".join(self.lines))


def start_up(
    env: dict[str, str], args: list[str] | None = None, timeout: float = 90
) -> tuple[subprocess.Popen, list[str]]:
    """Run `headrace up` and return once it printed its ready line (or fail with what it printed)."""
    up = UpProcess(env, args)
    up.wait_ready(timeout)
    return up.process, list(up.lines)


def stop_up(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    process.send_signal(sig)
    return process.wait(timeout=timeout)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir for `headrace up` outside pytest's temp root.

    Run as root, the embedded Postgres runs as another user, who must be able to reach its data dir; every pytest
    session (another one on the same machine too) sets its temp root back to mode 0700, which would lock it out.
    """
    path = Path(tempfile.mkdtemp(prefix="headrace-test-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


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
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        data_dir=work_dir / "inproc",
        admin_token=TEST_ADMIN_TOKEN,
        secret_key=TEST_SECRET_KEY,
        outbound_allow=TEST_CREDENTIALS["HEADRACE_OUTBOUND_ALLOW"],
    )


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


@pytest.fixture(scope="session")
def ftp_server(work_dir: Path) -> Iterator[ScratchFtp]:
    """pyftpdlib (plain FTP, passive mode) in a thread, on a loopback port."""
    with running_ftp(work_dir, "ftp") as server:
        yield server


@pytest.fixture(scope="session")
def ftps_server(work_dir: Path) -> Iterator[ScratchFtp]:
    """pyftpdlib with explicit TLS required on control and data connections, and a self-signed certificate."""
    with running_ftp(work_dir, "ftps") as server:
        yield server


@pytest.fixture(params=KINDS)
def file_server(request: pytest.FixtureRequest) -> FileServer:
    """Each file server in turn (SFTP, FTP, FTPS), for the tests whose behaviour is the same on all of them."""
    kind: str = request.param
    return FileServer(request.getfixturevalue(f"{kind}_server"), kind)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that ran against the session's platform reports what the platform printed meanwhile."""
    report = yield
    running = getattr(item, "funcargs", {}).get("platform")
    if isinstance(running, RunningPlatform) and getattr(report, "failed", False) and call.when == "call":
        report.sections.append(("platform output (last 150 lines)", "\n".join(running.output[-150:])))
    return report
