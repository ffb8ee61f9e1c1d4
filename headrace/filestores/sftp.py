"""SFTP as a file store, with asyncssh over the connection headrace/sftp.py opens (outbound-checked, host keys);
every operation bounded by the file-store timeout, a transfer by its progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import asyncssh

from headrace.filestores.base import CHUNK_BYTES, FileStoreError, RemoteFile, RenamingStore, bounded
from headrace.outbound import OutboundRefused
from headrace.secrets import redact
from headrace.settings import Settings
from headrace.sftp import SftpServer, connect_sftp

_ERRORS = (OSError, asyncssh.Error)


class SftpStore(RenamingStore):
    def __init__(self, sftp: asyncssh.SFTPClient, where: str, timeout: float) -> None:
        self.sftp = sftp
        self.where = where
        self.timeout = timeout

    def _failed(self, action: str, path: str, exc: BaseException) -> FileStoreError:
        reason = f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else redact(str(exc))
        return FileStoreError(f"{self.where}: cannot {action} {path}: {reason}")

    async def list(self, pattern: str) -> list[RemoteFile]:
        try:
            async with asyncio.timeout(self.timeout):
                names = await self.sftp.glob(pattern)
        except asyncssh.SFTPNoSuchFile:
            return []
        except (*_ERRORS, TimeoutError) as exc:
            raise self._failed("list", pattern, exc) from exc
        found = []
        for name in names:
            assert isinstance(name, str)  # a str pattern globs to str names
            try:
                async with asyncio.timeout(self.timeout):
                    attrs = await self.sftp.stat(name)
            except (*_ERRORS, TimeoutError) as exc:
                raise self._failed("list", pattern, exc) from exc
            if attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                found.append(RemoteFile(name, attrs.size or 0, float(attrs.mtime or 0)))
        return bounded(found, pattern)

    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        try:
            async with asyncio.timeout(self.timeout):
                remote = await self.sftp.open(path, "rb")
            try:
                while True:
                    # Each chunk has its own deadline: a file is as long as it is, a silent server is not.
                    async with asyncio.timeout(self.timeout):
                        # asyncssh types read() as returning any AnyStr: a file opened "rb" reads bytes.
                        chunk: bytes = await remote.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    yield chunk
            finally:
                await _quietly(remote.close())
        except (*_ERRORS, TimeoutError) as exc:
            raise self._failed("read", path, exc) from exc

    async def _write(self, source: Path | bytes, remote: str) -> None:
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                if isinstance(source, Path):
                    loop = asyncio.get_running_loop()

                    def progressed(*_: object) -> None:
                        # A large file takes what it takes: the deadline is for a transfer that stops moving.
                        deadline.reschedule(loop.time() + self.timeout)

                    await self.sftp.put(str(source), remote, progress_handler=progressed)
                    return
                async with self.sftp.open(remote, "wb") as handle:
                    await handle.write(source)
        except (*_ERRORS, TimeoutError) as exc:
            raise self._failed("write", remote, exc) from exc

    async def _replace(self, temporary: str, name: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._rename(temporary, name)
        except (*_ERRORS, TimeoutError) as exc:
            raise self._failed("rename into", name, exc) from exc

    async def _rename(self, temporary: str, name: str) -> None:
        # posix-rename replaces an existing file atomically, which a retried run needs; plain rename refuses.
        try:
            await self.sftp.posix_rename(temporary, name)
            return
        except asyncssh.SFTPOpUnsupported:
            pass
        if await self.sftp.exists(name):
            await self.sftp.remove(name)
        await self.sftp.rename(temporary, name)

    async def delete(self, name: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.sftp.remove(name)
        except asyncssh.SFTPNoSuchFile:
            pass
        except (*_ERRORS, TimeoutError) as exc:
            raise self._failed("delete", name, exc) from exc


@asynccontextmanager
async def open_sftp(server: SftpServer, settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[SftpStore]:
    where = f"sftp://{server.user}@{server.host}:{server.port}"
    timeout = settings.file_store_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            connection = await connect_sftp(server, settings, pool)
    except (*_ERRORS, OutboundRefused, TimeoutError) as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else redact(str(exc))
        raise FileStoreError(f"cannot connect to {where}: {reason}") from None
    try:
        async with asyncio.timeout(timeout):
            client = await connection.start_sftp_client()
    except (*_ERRORS, TimeoutError) as exc:
        connection.abort()
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else redact(str(exc))
        raise FileStoreError(f"cannot start SFTP on {where}: {reason}") from None
    try:
        yield SftpStore(client, where, timeout)
    finally:
        client.exit()
        connection.close()
        if not await _quietly(connection.wait_closed()):
            connection.abort()


CLOSE_SECONDS = 2.0


async def _quietly(closing: Awaitable[object]) -> bool:
    """Close something on a server that may have stopped answering: whether it closed within CLOSE_SECONDS (a run
    whose work is done, or failed already, is not held for the whole operation timeout by a courtesy)."""
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await closing
    except (*_ERRORS, TimeoutError):
        return False
    return True
