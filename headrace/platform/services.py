"""One service process kept running: restarted with exponential backoff whenever it dies, and accounted for."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headrace.logs import JsonFormatter
from headrace.platform.processes import describe_exit, spawn, terminate, wait_exit, wait_ready

# The first restart comes quickly (a one-off crash costs half a second); a service that keeps dying is retried
# less and less often, at most every 30 s, so a crash loop neither spins the CPU nor floods the logs.
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A run that lasted this long was not part of a crash loop: the next restart is quick again.
STABLE_AFTER_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


class SupervisedService:
    """A service's process: started, watched, restarted after any exit the supervisor did not ask for, stopped."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_file: Path,
        url: str,
        say: Callable[[str], None],
        changed: Callable[[], None],
        log_format: str = "json",
    ) -> None:
        self.name, self.args, self.env, self.log_file, self.url = name, args, env, log_file, url
        self._say, self._changed = say, changed
        self.process: subprocess.Popen[bytes] | None = None
        self.state = "stopped"
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_exit_at: datetime | None = None
        self.up_since: datetime | None = None
        self._spawned_at = 0.0
        self._delay = BACKOFF_FIRST_SECONDS
        self._watcher: asyncio.Task[None] | None = None
        self._log = self._file_logger(log_format)

    def _file_logger(self, log_format: str) -> logging.Logger:
        # The supervisor's lines about a service go into that service's own log too, where its crash is.
        logger = logging.getLogger(f"headrace.supervisor.{self.name}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handler = logging.FileHandler(self.log_file, delay=True)
        handler.setFormatter(
            JsonFormatter("supervisor")
            if log_format == "json"
            else logging.Formatter("%(asctime)s supervisor %(levelname)s %(name)s: %(message)s")
        )
        logger.handlers[:] = [handler]
        return logger

    def _spawn(self) -> None:
        # Counted from the attempt, so that a spawn that fails is not taken for a long, stable run.
        self._spawned_at = time.monotonic()
        self.process = spawn(self.args, self.log_file, env=self.env)
        self.up_since = _now()
        self.state = "starting"

    async def start(self) -> None:
        """Start the process and wait until it is ready; a service that cannot start at all is not retried."""
        self._spawn()
        assert self.process is not None
        try:
            await wait_ready(self.url, self.process, READY_TIMEOUT_SECONDS, self.env.get("HEADRACE_ADMIN_TOKEN"))
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name} {exc}; see {self.log_file}") from exc
        self.state = "running"
        self._watcher = asyncio.create_task(self._watch(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        """Stop watching first, so that the process stopped now is not restarted; then stop it."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        # Whatever the watcher was doing when cancelled (waiting out a backoff, or a restarted process getting
        # ready), self.process is the latest process it spawned: spawning never awaits.
        if self.process is not None:
            await terminate(self.process)
        self.state = "stopped"
        for handler in self._log.handlers:
            handler.close()

    async def _watch(self) -> None:
        assert self.process is not None
        while True:
            code = await wait_exit(self.process)
            ran = time.monotonic() - self._spawned_at
            if ran >= STABLE_AFTER_SECONDS:
                self._delay = BACKOFF_FIRST_SECONDS
            self.last_exit_code, self.last_exit_at, self.up_since = code, _now(), None
            self.state = "restarting"
            self._changed()
            self._note(
                logging.WARNING,
                f"{self.name} exited ({describe_exit(code)}) after {ran:.1f}s; restarting in {self._delay:g}s",
            )
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, BACKOFF_MAX_SECONDS)
            try:
                self._spawn()
            except OSError as exc:  # no fork, no file descriptors left: try again later rather than give up
                self._note(logging.ERROR, f"{self.name} could not be started again: {exc}")
                continue
            self.restarts += 1
            self._changed()
            self._note(logging.INFO, f"{self.name} restarted (pid {self.process.pid}, restart {self.restarts})")
            try:
                await wait_ready(self.url, self.process, READY_TIMEOUT_SECONDS, self.env.get("HEADRACE_ADMIN_TOKEN"))
            except RuntimeError:
                continue  # it died before it was ready: the loop sees the exit and backs off further
            except TimeoutError:
                self._note(logging.WARNING, f"{self.name} is not ready {READY_TIMEOUT_SECONDS:g}s after its restart")
                continue
            self.state = "running"
            self._changed()
            self._note(logging.INFO, f"{self.name} is ready again")

    def _note(self, level: int, message: str) -> None:
        self._say(message)
        self._log.log(level, message)

    def snapshot(self) -> dict[str, Any]:
        """What `headrace status` shows of this service, as the runtime record carries it."""
        process = self.process
        return {
            "pid": process.pid if process is not None and process.poll() is None else None,
            "url": self.url,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_exit_at": self.last_exit_at,
            "up_since": self.up_since,
        }
