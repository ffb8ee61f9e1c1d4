"""Fixtures for tests of `headrace up` itself: each test starts its own platforms, and none outlives its test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.platform.helpers import LocalPlatform, launch


@pytest.fixture
def launched() -> Iterator[Callable[[dict[str, str], Path], LocalPlatform]]:
    """Starts `headrace up`; whatever a failing test left running is stopped (then killed) afterwards."""
    started: list[LocalPlatform] = []

    def start(env: dict[str, str], data_dir: Path) -> LocalPlatform:
        platform = launch(env, data_dir)
        started.append(platform)
        return platform

    yield start
    for platform in started:
        if platform.up.process.poll() is None:
            try:
                platform.stop(timeout=90)
            except subprocess.TimeoutExpired:
                platform.up.process.kill()
