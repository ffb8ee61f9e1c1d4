"""SFTP as a file store, with asyncssh over the connection headrace/sftp.py opens (outbound-checked, host keys)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
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
    def __init__(self, sftp: asyncssh.SFTPClient, where: str) -> None:
        self.sftp = sftp
        self.where = where

    def _failed(self, action: str, path: str, exc: BaseException) -> FileStoreError:
        return FileStoreError(f"{self.where}: cannot {action} {path}: {redact(str(exc))}")

    async def list(self, pattern: str) -> list[RemoteFile]:
        try:
            names = await self.sftp.glob(pattern)
        except asyncssh.SFTPNoSuchFile:
            return []
        except _ERRORS as exc:
            raise self._failed("list", pattern, exc) from exc
        found = []
        for name in names:
            assert isinstance(name, str)  # a str pattern globs to str names
            attrs = await self.sftp.stat(name)
            if attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                found.append(RemoteFile(name, attrs.size or 0, float(attrs.mtime or 0)))
        return bounded(found, pattern)

    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        try:
            async with self.sftp.open(path, "rb") as remote:
                while True:
                    # asyncssh types read() as returning any AnyStr: a file opened "rb" reads bytes.
                    chunk: bytes = await remote.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    yield chunk
        except _ERRORS as exc:
            raise self._failed("read", path, exc) from exc

    async def _write(self, source: Path | bytes, remote: str) -> None:
        try:
            if isinstance(source, Path):
                await self.sftp.put(str(source), remote)
                return
            async with self.sftp.open(remote, "wb") as handle:
                await handle.write(source)
        except _ERRORS as exc:
            raise self._failed("write", remote, exc) from exc

    async def _replace(self, temporary: str, name: str) -> None:
        try:
            # posix-rename replaces an existing file atomically, which a retried run needs; plain rename refuses.
            try:
                await self.sftp.posix_rename(temporary, name)
                return
            except asyncssh.SFTPOpUnsupported:
                pass
            if await self.sftp.exists(name):
                await self.sftp.remove(name)
            await self.sftp.rename(temporary, name)
        except _ERRORS as exc:
            raise self._failed("rename into", name, exc) from exc

    async def delete(self, name: str) -> None:
        try:
            await self.sftp.remove(name)
        except asyncssh.SFTPNoSuchFile:
            pass
        except _ERRORS as exc:
            raise self._failed("delete", name, exc) from exc


@asynccontextmanager
async def open_sftp(server: SftpServer, settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[SftpStore]:
    where = f"sftp://{server.user}@{server.host}:{server.port}"
    try:
        connection = await connect_sftp(server, settings, pool)
    except (*_ERRORS, OutboundRefused) as exc:
        raise FileStoreError(f"cannot connect to {where}: {redact(str(exc))}") from None
    try:
        async with connection.start_sftp_client() as sftp:
            yield SftpStore(sftp, where)
    finally:
        connection.close()
        await connection.wait_closed()
