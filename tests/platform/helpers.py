"""`headrace up` driven as a user drives it: its CLI, HTTP pushes, its processes and ports, waiting for conditions."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import psutil

from headrace.settings import ADMIN_TOKEN_FILE
from tests.conftest import UpProcess, clean_environ, service_port_env
from tests.eventually import eventually_sync as eventually

T = TypeVar("T")


def listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def embedded_env(**extra: str) -> dict[str, str]:
    """Embedded defaults (no HEADRACE_DATABASE_URL, no HEADRACE_KAFKA_BOOTSTRAP, no credentials: `headrace up` makes
    them in the data dir, where the CLI finds them), every service on a free port."""
    return clean_environ(credentials=False) | service_port_env() | extra


def push(url: str, records: list[dict[str, Any]]) -> None:
    """Push records as one NDJSON body and require Kafka's acknowledgement of every one (the 200)."""
    body = b"".join(orjson.dumps(record) + b"\n" for record in records)
    response = httpx.post(url, content=body, headers={"Content-Type": "application/x-ndjson"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": len(records)}


@dataclass
class LocalPlatform:
    """One `headrace up` with its own data dir, and the CLI pointed at it."""

    up: UpProcess
    env: dict[str, str]
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.up.process.pid

    @property
    def admin_headers(self) -> dict[str, str]:
        """What an HTTP call to a management route carries: the token `headrace up` keeps in the data dir."""
        return {"Authorization": f"Bearer {(self.data_dir / ADMIN_TOKEN_FILE).read_text().strip()}"}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "headrace", "--data-dir", str(self.data_dir), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def cli_json(self, *args: str) -> Any:
        return orjson.loads(self.cli(*args, "--json").stdout)

    def status(self) -> dict[str, Any]:
        """`headrace status --json`, whatever its exit code (it is 1 while a service is not ready)."""
        return orjson.loads(self.cli("status", "--json", check=False).stdout)

    def stored_ids(self, storage: str) -> list[str]:
        return [row["_event_id"] for row in self.cli_json("storage", "query", storage)]

    def wait_stored(self, storage: str, expected: set[str], timeout: float = 60) -> list[str]:
        """Wait until the storage holds every expected event id, and return all the ids it holds."""
        missing: set[str] = set(expected)

        def check() -> list[str] | None:
            ids = self.stored_ids(storage)
            missing.clear()
            missing.update(expected - set(ids))
            return ids if not missing else None

        try:
            return eventually(check, timeout, f"{len(expected)} events stored in {storage}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {len(missing)} still missing, e.g. {sorted(missing)[:5]}") from None

    def wait_restarted(self, service: str, at_least: int = 1, timeout: float = 60) -> dict[str, Any]:
        """Wait until the service was restarted and answers ready again; return its status."""

        def check() -> dict[str, Any] | None:
            info = self.status()["services"][service]
            return info if info["restarts"] >= at_least and info["ready"] else None

        return eventually(check, timeout, f"{service} restarted and ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        self.up.process.send_signal(sig)
        return self.up.process.wait(timeout=timeout)


def launch(env: dict[str, str], data_dir: Path, timeout: float = 120) -> LocalPlatform:
    up = UpProcess(env, ["--data-dir", str(data_dir)])
    up.wait_ready(timeout)
    return LocalPlatform(up, env, data_dir)
