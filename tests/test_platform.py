"""`headrace up` on embedded defaults: ready, then stopped by a signal with nothing left behind, twice in a row."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from headrace.settings import SERVICES
from tests.conftest import clean_environ, service_port_env, start_up, stop_up
from tests.platform.helpers import descendants, listening_ports


def test_up_twice_on_embedded_defaults_leaves_nothing_behind(data_dir: Path) -> None:
    env = clean_environ() | service_port_env()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C the first time, SIGTERM the second
        # The timeout guards against a hang; how fast the platform gets ready is not asserted here.
        process, lines = start_up(env, ["--data-dir", str(data_dir)], timeout=90)
        text = "\n".join(lines)
        assert "embedded Tansu" in text and "embedded, data in" in text
        ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
        assert len(ports) == 2 + len(SERVICES)  # broker, postgres and the services
        assert ports <= listening_ports()
        children = descendants(process.pid)
        assert len(children) >= 2 + len(SERVICES)

        status = subprocess.run(
            [sys.executable, "-m", "headrace", "--data-dir", str(data_dir), "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stdout + status.stderr

        assert stop_up(process, stop_signal) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left running: {alive}"
        assert not (ports & listening_ports()), "a port is still bound"
        # Postgres data is kept for the next run; the in-memory broker's topics are not.
        assert (data_dir / "postgres" / "PG_VERSION").exists()
        assert not (data_dir / "runtime.json").exists()
