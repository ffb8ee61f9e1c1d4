"""Client fixtures: a Client on the running platform's ingest service, and a polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from headrace.client import Client, HeadraceError

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.3) -> T:
    """Call check() until it stops raising AssertionError; its value, or its last error past the timeout.

    A 422 counts as not yet: a query naming columns the first rows have not created yet is refused until then.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            try:
                return check()
            except HeadraceError as exc:
                if exc.status != 422:
                    raise
                raise AssertionError(str(exc)) from exc
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


@pytest.fixture
def client(platform: Any) -> Iterator[Client]:
    with Client(platform.settings.service_url("ingest")) as client:
        yield client
