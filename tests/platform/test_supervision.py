"""`headrace up` keeps the platform when a service dies (restarted, nothing acknowledged lost), not the broker."""

from __future__ import annotations

import os
import re
import signal
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

from headrace.settings import SERVICES
from tests.platform.helpers import LocalPlatform, descendants, embedded_env, eventually, listening_ports, push

Launch = Callable[[dict[str, str], Path], LocalPlatform]


def test_killed_services_come_back_and_no_acknowledged_event_is_lost(data_dir: Path, launched: Launch) -> None:
    # A 1 MiB warning threshold checked every second: the broker passes it at once, so the warning must show.
    env = embedded_env(HEADRACE_BROKER_MEMORY_WARN_MB="1", HEADRACE_BROKER_MEMORY_CHECK_SECONDS="1")
    platform = launched(env, data_dir)
    assert stat.S_IMODE((data_dir / "runtime.json").stat().st_mode) == 0o600
    storage = f"killed_{uuid.uuid4().hex[:8]}"
    url = platform.cli_json("storage", "create", storage)["push_url"]
    broker_pid = platform.status()["broker"]["pid"]

    # transform is frozen first, so the events pushed now are acknowledged by the broker and surely not written
    # when it is killed. They are one NDJSON push: multi-event record batches, which the event count must get right.
    transform_pid = platform.status()["services"]["transform"]["pid"]
    os.kill(transform_pid, signal.SIGSTOP)
    before_transform = [f"before-transform-{i}" for i in range(20)]
    push(url, [{"_id": event_id, "n": i} for i, event_id in enumerate(before_transform)])
    os.kill(transform_pid, signal.SIGKILL)
    transform = platform.wait_restarted("transform")
    assert transform["pid"] != transform_pid
    assert transform["last_exit_code"] == -signal.SIGKILL and transform["last_exit_at"]
    push(url, [{"_id": "after-transform"}])
    platform.wait_stored(storage, {*before_transform, "after-transform"})

    ingest_pid = platform.status()["services"]["ingest"]["pid"]
    push(url, [{"_id": "before-ingest"}])
    os.kill(ingest_pid, signal.SIGKILL)
    ingest = platform.wait_restarted("ingest")
    assert ingest["pid"] != ingest_pid and ingest["last_exit_code"] == -signal.SIGKILL
    push(url, [{"_id": "after-ingest"}])

    expected = {*before_transform, "after-transform", "before-ingest", "after-ingest"}
    stored = platform.wait_stored(storage, expected)
    assert sorted(stored) == sorted(expected)  # each exactly once

    status = platform.status()
    assert status["broker"]["pid"] == broker_pid and psutil.pid_exists(broker_pid)  # the broker kept running
    assert all(info["ready"] for info in status["services"].values())
    assert status["services"]["exporter"]["restarts"] == 0
    assert status["broker"]["rss_bytes"] > 0
    assert status["broker"]["topics"][f"headrace.ingest.{storage}"] == len(expected)
    assert status["broker"]["events"] >= len(expected)
    assert platform.up.wait_for_line(lambda line: "transform exited (signal SIGKILL)" in line, 5)
    assert "ingest exited (signal SIGKILL)" in (data_dir / "logs" / "ingest.log").read_text()
    assert platform.up.wait_for_line(lambda line: line.startswith("WARNING: the embedded broker uses"), 30)

    # A stop while transform is being restarted leaves nothing behind either, the new process included.
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", "\n".join(platform.up.lines))}
    os.kill(platform.status()["services"]["transform"]["pid"], signal.SIGKILL)
    eventually(lambda: platform.status()["services"]["transform"]["state"] != "running", 30, "transform restarting")
    children = descendants(platform.pid)
    assert platform.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    assert not (ports & listening_ports()), "a port is still bound"


def test_a_dead_broker_stops_the_platform_with_nothing_left_behind(data_dir: Path, launched: Launch) -> None:
    platform = launched(embedded_env(), data_dir)
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", "\n".join(platform.up.lines))}
    assert len(ports) == 2 + len(SERVICES)  # broker, postgres and the services
    children = descendants(platform.pid)
    broker_pid = platform.status()["broker"]["pid"]

    os.kill(broker_pid, signal.SIGKILL)
    assert platform.up.process.wait(timeout=90) != 0
    assert platform.up.wait_for_line(lambda line: "the embedded broker exited" in line, 5)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    assert not (ports & listening_ports()), "a port is still bound"
    assert not (data_dir / "runtime.json").exists()
