"""A service as a separate process (`python -m MODULE`) on its own port, which a test can start, kill -9 and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from headrace.platform.processes import free_port, wait_ready
from tests.conftest import REPO


@dataclass
class ServiceProcess:
    name: str
    module: str
    env: dict[str, str]
    port_variable: str
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env | {self.port_variable: str(self.port)},
                cwd=REPO,
                stdout=log,
                stderr=log,
            )

    async def ready(self, timeout: float = 90) -> None:
        assert self.process is not None
        try:
            await wait_ready(self.url, self.process, timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{self.name} {exc}:\n" + self.log_path.read_text()[-3000:]) from exc

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as response:
            return await response.text()

    def kill(self) -> None:
        """kill -9: no shutdown hook runs, nothing is flushed."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
