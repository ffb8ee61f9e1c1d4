"""The benchmark convention: a Benchmark module exposes `run(env)`, returning Figures; ratios divide by a baseline."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from headrace.platform.scratch import fresh_database, running_broker
from headrace.settings import Settings


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None  # the same measure for the baseline, when the figure has one

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.value / self.baseline

    def to_json(self) -> dict:
        return asdict(self) | {"ratio": self.ratio}


@dataclass
class BenchEnv:
    """Real servers started for one benchmark run."""

    settings: Settings
    work_dir: Path


def service_environ(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service a benchmark starts runs with: this run's servers and credentials, and `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    return base | {
        "HEADRACE_KAFKA_BOOTSTRAP": settings.require_kafka_bootstrap(),
        "HEADRACE_DATABASE_URL": settings.require_database_url(),
        "HEADRACE_ADMIN_TOKEN": settings.require_admin_token(),
        "HEADRACE_SECRET_KEY": settings.require_secret_key(),
        "HEADRACE_OUTBOUND_ALLOW": settings.outbound_allow,
        "HEADRACE_LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def bench_env(need_postgres: bool = True) -> Iterator[BenchEnv]:
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(TemporaryDirectory(prefix="headrace-bench-")))
        bootstrap = stack.enter_context(running_broker(work_dir))
        database_url = stack.enter_context(fresh_database(work_dir)) if need_postgres else None
        # Every server a benchmark starts is on loopback, which collectors and exports may reach only when allowed.
        settings = Settings(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            data_dir=work_dir,
            admin_token=secrets.token_urlsafe(32),
            secret_key=secrets.token_urlsafe(32),
            outbound_allow="127.0.0.1,::1,localhost",
        )
        yield BenchEnv(settings, work_dir)


def status_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory line of /proc/<pid>/status in MiB: VmHWM (the peak resident size so far) or VmRSS (now)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")
