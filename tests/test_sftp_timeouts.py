"""SFTP servers that stop answering: the connection, each operation and the closing are bounded, against real sshd."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import asyncpg
import psutil
import pytest

from headrace.filestores import FileStoreError, open_store
from headrace.platform.processes import free_port
from headrace.platform.scratch import ScratchSftp
from headrace.settings import Settings
from ingest.collectors.source_models import SftpSource

TIMEOUT = 1.0


def source(server: ScratchSftp, port: int | None = None) -> SftpSource:
    return SftpSource(
        host=server.host,
        port=port or server.port,
        user=server.user,
        private_key=server.client_key,
        host_key=server.host_public_key,
        pattern=f"{server.root}/*.csv",
    )


def sshd_of(port: int) -> psutil.Process:
    for connection in psutil.net_connections("tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
            assert connection.pid is not None
            return psutil.Process(connection.pid)
    raise LookupError(f"nothing listens on {port}")


@contextmanager
def stopped_sessions(listener: psutil.Process) -> Iterator[None]:
    """SIGSTOP the sshd processes serving open connections (the listener keeps accepting): a server gone silent."""
    sessions = listener.children(recursive=True)
    assert sessions, "no SFTP session is open"
    for process in sessions:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in sessions:
            try:
                os.kill(process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


async def test_a_server_that_accepts_and_says_nothing_is_refused_in_time(
    settings: Settings, pool: asyncpg.Pool, sftp_server: ScratchSftp
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", free_port()))
    silent.listen()
    try:
        quick = settings.model_copy(update={"file_store_timeout_seconds": TIMEOUT})
        with pytest.raises(FileStoreError, match=f"no answer within {TIMEOUT:g} s"):
            async with asyncio.timeout(30):  # the test's own bound: the store's must fire long before
                async with open_store(source(sftp_server, silent.getsockname()[1]), quick, pool):
                    pass
    finally:
        silent.close()


async def test_a_server_silent_mid_run_fails_the_operation_and_the_close_returns(
    settings: Settings, pool: asyncpg.Pool, sftp_server: ScratchSftp
) -> None:
    name = f"{sftp_server.root}/timeouts-{os.getpid()}.csv"
    await asyncio.to_thread(Path(name).write_text, "id\n" + "".join(f"{i}\n" for i in range(200_000)))
    quick = settings.model_copy(update={"file_store_timeout_seconds": TIMEOUT})
    listener = sshd_of(sftp_server.port)
    async with asyncio.timeout(30):
        async with open_store(source(sftp_server), quick, pool) as store:
            assert [f.path for f in await store.list(name)] == [name]
            with stopped_sessions(listener), pytest.raises(FileStoreError, match=r"cannot list .*no answer within"):
                await store.list(name)
        # Reading: the first chunk comes, then the server stops; the next chunk's deadline fails the read.
        async with open_store(source(sftp_server), quick, pool) as store:
            chunks = store.read(name)
            assert await anext(chunks)
            with stopped_sessions(listener), pytest.raises(FileStoreError, match=r"cannot read .*no answer within"):
                async for _ in chunks:
                    pass
            with stopped_sessions(listener), pytest.raises(FileStoreError, match="cannot write"):
                await store.put_bytes(b"id\n1\n", f"{sftp_server.root}/timeouts-{os.getpid()}-out.csv")
        # Closing while the server is silent: bounded too (the connection is dropped, not waited for).
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(open_store(source(sftp_server), quick, pool))
            await store.list(name)
            with stopped_sessions(listener):
                await stack.aclose()
    await asyncio.to_thread(Path(name).unlink)
