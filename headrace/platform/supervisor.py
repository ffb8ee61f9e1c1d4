"""`headrace up`: start broker, Postgres and the services, keep the services running, stop all in order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from headrace.platform.broker import BrokerMemoryWatch, EmbeddedBroker
from headrace.platform.credentials import ensure_credentials, mask_url, shown_path
from headrace.platform.holdings import Drain, events_by_topic
from headrace.platform.postgres import EmbeddedPostgres
from headrace.platform.processes import describe_exit, free_port, port_is_free, terminate, wait_exit
from headrace.platform.runtime import read_runtime, remove_runtime, write_runtime
from headrace.platform.services import SupervisedService
from headrace.postgres import create_pool, migrate
from headrace.settings import SERVICES, Settings

# The module each service runs as (python -m MODULE).
SERVICE_MODULES = {
    "ingest": "ingest",
    "schema-registry": "schema_registry",
    "transform": "transform",
    "exporter": "exporter",
    "console": "console",
}
DEFAULT_BROKER_PORT = 9092
DEFAULT_POSTGRES_PORT = 5433
EMBEDDED_SESSION_TIMEOUT_MS = 3000


def _say(line: str) -> None:
    print(line, flush=True)


def _pick_port(host: str, preferred: int) -> int:
    return preferred if port_is_free(host, preferred) else free_port(host)


def _alive(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None


class Platform:
    """Everything one machine needs, started in order, services kept running, stopped in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.services: dict[str, SupervisedService] = {}
        self.memory_watch: BrokerMemoryWatch | None = None
        self.started_at = datetime.now(UTC)
        # Postgres' clock when this platform started: positions written since belong to this broker's topics.
        self.since: datetime | None = None
        self._recording = False

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        for service in SERVICES:
            port = settings.service_port(service)
            if not port_is_free(settings.host, port):
                variable = f"HEADRACE_{service.replace('-', '_').upper()}_PORT"
                raise RuntimeError(f"port {port} for {service} is in use; free it or set {variable}")
        if settings.kafka_bootstrap is None:
            self.broker = EmbeddedBroker(
                "127.0.0.1", _pick_port("127.0.0.1", DEFAULT_BROKER_PORT), self.log_dir / "broker.log"
            )
            await self.broker.start()
            update: dict[str, object] = {"kafka_bootstrap": self.broker.bootstrap}
            if "kafka_session_timeout_ms" not in settings.model_fields_set:
                # Tansu forms a group in half the session timeout, and has no minimum like Kafka's 6 s: a new
                # storage's topic is then picked up by transform in about 1.5 s instead of 3.
                update["kafka_session_timeout_ms"] = EMBEDDED_SESSION_TIMEOUT_MS
            settings = settings.model_copy(update=update)
            _say(f"broker           kafka://{self.broker.bootstrap}  (embedded Tansu, in memory)")
        else:
            _say(f"broker           kafka://{mask_url(settings.kafka_bootstrap)}")
        if settings.database_url is None:
            self.postgres = EmbeddedPostgres(
                self.data_dir,
                "127.0.0.1",
                _pick_port("127.0.0.1", DEFAULT_POSTGRES_PORT),
                self.log_dir / "postgres.log",
            )
            await self.postgres.start()
            settings = settings.model_copy(update={"database_url": self.postgres.dsn()})
            _say(
                f"postgres         {mask_url(settings.require_database_url())}  (embedded, data in"
                f" {shown_path(self.postgres.pgdata)}, password in {shown_path(self.postgres.password_file)})"
            )
        else:
            _say(f"postgres         {mask_url(settings.database_url)}")
        self.settings = settings
        pool = await create_pool(settings, max_size=2)
        try:
            await migrate(pool)
            self.since = await pool.fetchval("SELECT now()")
        finally:
            await pool.close()

        env = os.environ | {
            "HEADRACE_KAFKA_BOOTSTRAP": settings.require_kafka_bootstrap(),
            "HEADRACE_DATABASE_URL": settings.require_database_url(),
            "HEADRACE_DATA_DIR": str(self.data_dir),
            "HEADRACE_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
            "HEADRACE_ADMIN_TOKEN": settings.require_admin_token(),
            "HEADRACE_SECRET_KEY": settings.require_secret_key(),
        }
        for service in SERVICES:
            self.services[service] = SupervisedService(
                service,
                [sys.executable, "-m", SERVICE_MODULES[service]],
                env,
                self.log_dir / f"{service}.log",
                settings.service_url(service),
                say=_say,
                changed=self._record,
                log_format=settings.log_format,
            )
        # A task group: when one service cannot start, the others stop waiting at once.
        async with asyncio.TaskGroup() as group:
            for supervised in self.services.values():
                group.create_task(supervised.start())
        if self.broker is not None:
            assert self.broker.process is not None
            self.memory_watch = BrokerMemoryWatch(settings, self.broker.process.pid, _say, self._events_held)
            await self.memory_watch.start()
        self._recording = True
        self._record()
        for service in SERVICES:
            _say(f"{service:<16} {settings.service_url(service)}")
        _say(f"logs             {shown_path(self.log_dir)}")

    async def _events_held(self) -> int:
        return sum((await events_by_topic(self.settings)).values())

    def _record(self) -> None:
        """Write the runtime record `headrace status` and the CLI read; called again at every service change."""
        if not self._recording:
            return
        try:
            self._write_record()
        except OSError as exc:  # a full disk must not stop the supervision that called this
            _say(f"could not write {self.data_dir / 'runtime.json'}: {exc}")

    def _recorded_database_url(self) -> str | None:
        """The DSN the CLI finds in runtime.json, which holds no password: the embedded Postgres' one is in its own
        file; a database of HEADRACE_DATABASE_URL that needs a password is left out (the CLI needs that variable)."""
        if self.postgres is not None:
            return self.postgres.url
        url = self.settings.database_url
        return url if url is not None and mask_url(url) == url else None

    def _write_record(self) -> None:
        write_runtime(
            self.data_dir,
            {
                "pid": os.getpid(),
                "started_at": self.started_at,
                "settings": {
                    "kafka_bootstrap": self.settings.kafka_bootstrap,
                    "database_url": self._recorded_database_url(),
                    "host": self.settings.host,
                    **{f"{s.replace('-', '_')}_port": self.settings.service_port(s) for s in SERVICES},
                },
                "broker": {
                    "bootstrap": self.settings.kafka_bootstrap,
                    "embedded": self.broker is not None,
                    "pid": self.broker.process.pid if self.broker and self.broker.process else None,
                    "memory_warn_mb": self.settings.broker_memory_warn_mb,
                },
                "postgres": {
                    "embedded": self.postgres is not None,
                    "pid": self.postgres.process.pid if self.postgres and self.postgres.process else None,
                },
                "services": {name: supervised.snapshot() for name, supervised in self.services.items()},
            },
        )

    async def critical_exit(self) -> str:
        """Wait until the embedded broker or Postgres exits, and say what that means: the platform cannot go on."""
        watched: dict[asyncio.Task[int], str] = {}
        if self.broker is not None and self.broker.process is not None:
            what = f"the embedded broker exited, and the events it held with it (see {self.broker.log_file})"
            watched[asyncio.create_task(wait_exit(self.broker.process))] = what
        if self.postgres is not None and self.postgres.process is not None:
            what = f"the embedded Postgres exited (see {self.postgres.log_file})"
            watched[asyncio.create_task(wait_exit(self.postgres.process))] = what
        if not watched:  # nothing here to watch: an external cluster and database are not ours to stop for
            await asyncio.Event().wait()
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watched:
                task.cancel()
        task = done.pop()
        return f"{watched[task]}: {describe_exit(task.result())}; stopping the platform"

    async def stop(self, hurry: asyncio.Event) -> None:
        """Stop ingest first (no new pushes), let transform write what the embedded broker holds (bounded, cut short
        by `hurry`), then the other services, the broker and Postgres."""
        self._recording = False
        remove_runtime(self.data_dir)
        if self.memory_watch is not None:
            await self.memory_watch.stop()
        if "ingest" in self.services:
            await self.services["ingest"].stop()
        await self._drain(hurry)
        await asyncio.gather(*(s.stop() for name, s in self.services.items() if name != "ingest"))
        if self.broker is not None and self.broker.process is not None:
            await terminate(self.broker.process)
        if self.postgres is not None and self.postgres.process is not None:
            # SIGINT is Postgres' fast shutdown: abort sessions, checkpoint, exit.
            await terminate(self.postgres.process, signal.SIGINT, timeout=30)

    async def _drain(self, hurry: asyncio.Event) -> None:
        # Only the in-memory broker loses what it holds when it stops; a real Kafka keeps it for the next start.
        if self.broker is None or not _alive(self.broker.process) or self.since is None:
            return
        if self.postgres is not None and not _alive(self.postgres.process):
            return
        if "transform" not in self.services or hurry.is_set():
            return
        seconds = self.settings.stop_drain_seconds
        _say(f"letting transform write what the broker holds (at most {seconds:g}s; Ctrl-C again to stop now)…")
        try:
            # The bound holds even if the broker or Postgres stops answering the check itself.
            async with asyncio.timeout(seconds + 10):
                left = await Drain(self.settings, self.since).wait(seconds, hurry)
        except Exception as exc:  # a stop must go on whatever this check meets
            _say(f"could not tell what transform has written ({exc}); stopping anyway")
            return
        if left:
            _say(f"{left} acknowledged events not yet written are lost with the in-memory broker")
        else:
            _say("transform has written every event the broker held")


async def run_platform(settings: Settings) -> int:
    stopping, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        # The first signal stops in order; another one cuts the wait for transform short.
        (hurry if stopping.is_set() else stopping).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    platform = Platform(settings)
    code = 0
    started = time.monotonic()
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        start = asyncio.create_task(platform.start())
        done, _ = await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if start in done:
            start.result()
            _say(f"Headrace is ready in {time.monotonic() - started:.1f}s. Press Ctrl-C to stop.")
            critical = asyncio.create_task(platform.critical_exit())
            ended, _ = await asyncio.wait({critical, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if critical in ended:
                _say(critical.result())
                code = 1
            else:
                critical.cancel()
        else:
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
    except Exception as exc:
        reasons = exc.exceptions if isinstance(exc, ExceptionGroup) else [exc]
        _say(f"Headrace failed to start: {'; '.join(str(reason) for reason in reasons)}")
        code = 1
    finally:
        stop_wait.cancel()
        _say("stopping…")
        await platform.stop(hurry)
        _say("stopped")
    return code


def up(settings: Settings) -> int:
    running = read_runtime(settings.data_dir)
    if running is not None:
        _say(f"Headrace is already running from {settings.data_dir} (pid {running['pid']})")
        return 1
    remove_runtime(settings.data_dir)
    try:
        settings = ensure_credentials(settings, _say)
    except (OSError, RuntimeError) as exc:
        _say(f"Headrace failed to start: {exc}")
        return 1
    return asyncio.run(run_platform(settings))
