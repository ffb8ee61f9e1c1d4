"""Which step failures are transient (retried with exponential backoff and jitter) and which are the user's."""

from __future__ import annotations

import asyncio
import random

import aioftp
import asyncpg
import asyncssh

from headrace.filestores import FileStoreError
from headrace.flows.definitions import Retry

# SQLSTATEs worth another attempt: the connection went away (class 08, an administrator's or a crash's shutdown,
# a server not accepting connections yet, too many connections), or contention (serialization, deadlock).
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})


def is_transient(exc: BaseException) -> bool:
    """A lost connection, a serialization failure or deadlock, an SFTP or FTP network error or an FTP server's 4xx;
    never a user's mistake (a formula Postgres refuses, a missing column, a script that exits non-zero, a refused
    login)."""
    if isinstance(exc, FileStoreError):
        # A file store names what failed; the protocol's error under it says whether trying again may help.
        under = exc.__cause__ or exc.__context__
        return under is not None and is_transient(under)
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith("08") or state in TRANSIENT_SQLSTATES
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)  # the connection went away under the step
    if isinstance(exc, asyncssh.DisconnectError):
        return not isinstance(exc, asyncssh.PermissionDenied | asyncssh.HostKeyNotVerifiable)
    if isinstance(exc, asyncssh.ConnectionLost | asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return True
    if isinstance(exc, aioftp.StatusCodeError):
        # RFC 959: 4yz is a transient negative reply (421 too many connections, 450 file busy…), 5yz a permanent one.
        return any(str(code).startswith("4") for code in exc.received_codes[-1:])
    return isinstance(exc, ConnectionError | TimeoutError | asyncio.TimeoutError) or (
        isinstance(exc, OSError) and exc.errno is not None and exc.errno in _NETWORK_ERRNOS
    )


_NETWORK_ERRNOS = frozenset({101, 103, 104, 110, 111, 113})  # unreachable, aborted, reset, timed out, refused


def backoff_seconds(policy: Retry, attempt: int, rng: random.Random | None = None) -> float:
    """The wait before attempt `attempt + 1`: exponential, capped, scaled down by up to `jitter` at random so that
    retries of many steps do not all come back at once."""
    base = min(policy.max_seconds, policy.backoff_seconds * 2 ** (attempt - 1))
    return float(base * (1 - policy.jitter * (rng or random).random()))
