"""Client fixtures: a Client on the running platform's ingest service, and a polling helper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from headrace.client import Client, HeadraceError
from tests.conftest import TEST_ADMIN_TOKEN
from tests.eventually import eventually_sync

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60.0) -> T | None:
    """tests.eventually's wait, where a 422 counts as not yet (a query naming columns the first rows have not created
    yet is refused until then) and the check holds once it stops raising AssertionError, whatever it returns (a
    DataFrame has no truth value)."""

    def attempt() -> list[T]:
        try:
            return [check()]
        except HeadraceError as exc:
            if exc.status != 422:
                raise
            raise AssertionError(str(exc)) from exc

    return eventually_sync(attempt, timeout=timeout)[0]


@pytest.fixture
def client(platform: Any) -> Iterator[Client]:
    with Client(platform.settings.service_url("ingest"), admin_token=TEST_ADMIN_TOKEN) as client:
        yield client
