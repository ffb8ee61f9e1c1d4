"""How a failed write is handled: Postgres away is waited for, contention is retried, anything else is isolated."""

from __future__ import annotations

import asyncpg

# Postgres unreachable, restarting or out of connections: nothing the events can change, so wait for it however
# long it takes (readiness reports it meanwhile).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InsufficientResourcesError,
    ConnectionError,
    OSError,
)
# Contention and time limits: retried a few times with backoff, then the batch is split to find what fails.
CONTENTION: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
    TimeoutError,
)
CONTENTION_ATTEMPTS = 5
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 10.0


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, CONTENTION)


def is_contention(exc: BaseException) -> bool:
    return isinstance(exc, CONTENTION)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (1-based): doubling from 0.1 s, at most 10 s."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))


def describe(exc: BaseException) -> str:
    """The reason a rejected row or dead letter carries: the error's class and message, on one line."""
    text = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:1000]
