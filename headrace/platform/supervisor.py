"""`headrace up`: start broker, Postgres and the four services, print where they are, stop them all on a signal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from headrace.platform.broker import EmbeddedBroker
from headrace.platform.postgres import EmbeddedPostgres
from headrace.platform.processes import free_port, port_is_free, spawn, terminate, wait_ready
from headrace.postgres import create_pool, migrate
from headrace.settings import SERVICES, Settings, runtime_path

# The module each service runs as (python -m MODULE).
SERVICE_MODULES = {
    "ingest": "ingest",
    "schema-registry": "schema_registry",
    "transform": "transform",
    "exporter": "exporter",
}
DEFAULT_BROKER_PORT = 9092
DEFAULT_POSTGRES_PORT = 5433
EMBEDDED_SESSION_TIMEOUT_MS = 3000


def _say(line: str) -> None:
    print(line, flush=True)


def _pick_port(host: str, preferred: int) -> int:
    return preferred if port_is_free(host, preferred) else free_port(host)


class Platform:
    """Everything one machine needs, started in order and stopped in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.services: dict[str, subprocess.Popen] = {}

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        for service in SERVICES:
            port = settings.service_port(service)
            if not port_is_free(settings.host, port):
                env = f"HEADRACE_{service.replace('-', '_').upper()}_PORT"
                raise RuntimeError(f"port {port} for {service} is in use; free it or set {env}")
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
            _say(f"broker           kafka://{settings.kafka_bootstrap}")
        if settings.database_url is None:
            self.postgres = EmbeddedPostgres(
                self.data_dir,
                "127.0.0.1",
                _pick_port("127.0.0.1", DEFAULT_POSTGRES_PORT),
                self.log_dir / "postgres.log",
            )
            await self.postgres.start()
            settings = settings.model_copy(update={"database_url": self.postgres.url})
            _say(f"postgres         {self.postgres.url}  (embedded, data in {self.postgres.pgdata})")
        else:
            _say(f"postgres         {settings.database_url}")
        self.settings = settings
        pool = await create_pool(settings, max_size=2)
        try:
            await migrate(pool)
        finally:
            await pool.close()

        env = os.environ | {
            "HEADRACE_KAFKA_BOOTSTRAP": settings.require_kafka_bootstrap(),
            "HEADRACE_DATABASE_URL": settings.require_database_url(),
            "HEADRACE_DATA_DIR": str(self.data_dir),
            "HEADRACE_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        }
        for service, module in SERVICE_MODULES.items():
            self.services[service] = spawn([sys.executable, "-m", module], self.log_dir / f"{service}.log", env=env)
        await asyncio.gather(*(self._ready(service) for service in SERVICES))
        self._write_runtime()
        for service in SERVICES:
            _say(f"{service:<16} {settings.service_url(service)}")
        _say(f"logs             {self.log_dir}")

    async def _ready(self, service: str) -> None:
        try:
            await wait_ready(self.settings.service_url(service), self.services[service], timeout=60)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{service} {exc}; see {self.log_dir / (service + '.log')}") from exc

    def _write_runtime(self) -> None:
        recorded = {
            "pid": os.getpid(),
            "settings": {
                "kafka_bootstrap": self.settings.kafka_bootstrap,
                "database_url": self.settings.database_url,
                "host": self.settings.host,
                **{f"{s.replace('-', '_')}_port": self.settings.service_port(s) for s in SERVICES},
            },
        }
        runtime_path(self.data_dir).write_bytes(orjson.dumps(recorded, option=orjson.OPT_INDENT_2))

    def first_exited(self) -> str | None:
        for name, process in self.services.items():
            if process.poll() is not None:
                return name
        return None

    async def stop(self) -> None:
        runtime_path(self.data_dir).unlink(missing_ok=True)
        await asyncio.gather(*(terminate(p) for p in self.services.values()))
        if self.broker is not None and self.broker.process is not None:
            await terminate(self.broker.process)
        if self.postgres is not None and self.postgres.process is not None:
            # SIGINT is Postgres' fast shutdown: abort sessions, checkpoint, exit.
            await terminate(self.postgres.process, signal.SIGINT, timeout=30)


async def run_platform(settings: Settings) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    platform = Platform(settings)
    code = 0
    started = time.monotonic()
    try:
        start = asyncio.create_task(platform.start())
        stop_wait = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if start in done:
            start.result()
            _say(f"Headrace is ready in {time.monotonic() - started:.1f}s. Press Ctrl-C to stop.")
            while not stopping.is_set():
                exited = platform.first_exited()
                if exited is not None:
                    _say(f"{exited} stopped unexpectedly; stopping the platform (see {platform.log_dir}/{exited}.log)")
                    code = 1
                    break
                try:
                    await asyncio.wait_for(stopping.wait(), 0.5)
                except TimeoutError:
                    pass
        else:
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
        stop_wait.cancel()
    except Exception as exc:
        _say(f"Headrace failed to start: {exc}")
        code = 1
    finally:
        _say("stopping…")
        await platform.stop()
        _say("stopped")
    return code


def up(settings: Settings) -> int:
    recorded = runtime_path(settings.data_dir)
    if recorded.exists():
        pid = orjson.loads(recorded.read_bytes()).get("pid")
        if pid and Path(f"/proc/{pid}").exists():
            _say(f"Headrace is already running from {settings.data_dir} (pid {pid})")
            return 1
        recorded.unlink()
    return asyncio.run(run_platform(settings))
