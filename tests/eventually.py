"""The one way tests wait: poll a condition until it holds, never sleep to synchronise.

A condition holds when it returns a truthy value without raising AssertionError; its value is returned. Past the
timeout the wait fails, saying what it waited for and what it saw last. The pause between polls is only the polling
interval: nothing waits on it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _describe(what: str, timeout: float, last: object) -> str:
    return f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"[:2000]


async def eventually(
    check: Callable[[], T | Awaitable[T]], timeout: float = 60.0, what: str = "the condition", interval: float = 0.2
) -> T:
    """Await (or call) `check` until it holds; return its value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            if isinstance(last, AssertionError):
                raise AssertionError(_describe(what, timeout, last)) from last
            raise AssertionError(_describe(what, timeout, last))
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T], timeout: float = 60.0, what: str = "the condition", interval: float = 0.2
) -> T:
    """The same for code without an event loop (the synchronous client, CLI processes)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(_describe(what, timeout, last))
        time.sleep(interval)
