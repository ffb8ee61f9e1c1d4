"""The benchmark convention: a Benchmark module exposes `run(env)`, returning Figures; ratios divide by a baseline."""

from __future__ import annotations

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


@contextmanager
def bench_env(need_postgres: bool = True) -> Iterator[BenchEnv]:
    with ExitStack() as stack:
        work_dir = Path(stack.enter_context(TemporaryDirectory(prefix="headrace-bench-")))
        bootstrap = stack.enter_context(running_broker(work_dir))
        database_url = stack.enter_context(fresh_database(work_dir)) if need_postgres else None
        yield BenchEnv(Settings(kafka_bootstrap=bootstrap, database_url=database_url, data_dir=work_dir), work_dir)
