"""SFTP delivery with asyncssh: each file is uploaded under a temporary name, then renamed into place."""

from __future__ import annotations

import posixpath
from pathlib import Path

import asyncpg
import asyncssh

from exporter.definitions import SftpDestination
from exporter.destinations import DeliveryFailed, Destination
from headrace.outbound import OutboundRefused
from headrace.secrets import redact
from headrace.settings import Settings
from headrace.sftp import connect_sftp


def _temporary(name: str) -> str:
    folder, leaf = posixpath.split(name)
    return posixpath.join(folder, f".{leaf}.part")


class Sftp(Destination):
    def __init__(self, settings: SftpDestination, platform: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.platform = platform
        self.pool = pool
        self._connection: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None

    async def open(self) -> None:
        s = self.settings
        try:
            self._connection = await connect_sftp(s, self.platform, self.pool)
            self._sftp = await self._connection.start_sftp_client()
        except (OSError, asyncssh.Error, OutboundRefused) as exc:
            raise DeliveryFailed(f"sftp://{s.user}@{s.host}:{s.port}: {redact(str(exc))}") from None

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        if self._connection is not None:
            self._connection.close()
            await self._connection.wait_closed()

    async def _rename_into_place(self, temporary: str, name: str) -> None:
        assert self._sftp is not None
        # posix-rename replaces an existing file atomically, which a retried run needs; plain rename refuses.
        try:
            await self._sftp.posix_rename(temporary, name)
            return
        except asyncssh.SFTPOpUnsupported:
            pass
        if await self._sftp.exists(name):
            await self._sftp.remove(name)
        await self._sftp.rename(temporary, name)

    async def put_file(self, local: Path, name: str) -> None:
        assert self._sftp is not None
        temporary = _temporary(name)
        try:
            await self._sftp.put(str(local), temporary)
            await self._rename_into_place(temporary, name)
        except (OSError, asyncssh.Error) as exc:
            raise DeliveryFailed(f"sftp {name}: {exc}") from exc

    async def put_bytes(self, data: bytes, name: str) -> None:
        assert self._sftp is not None
        temporary = _temporary(name)
        try:
            async with self._sftp.open(temporary, "wb") as remote:
                await remote.write(data)
            await self._rename_into_place(temporary, name)
        except (OSError, asyncssh.Error) as exc:
            raise DeliveryFailed(f"sftp {name}: {exc}") from exc

    async def delete(self, name: str) -> None:
        assert self._sftp is not None
        try:
            await self._sftp.remove(name)
        except asyncssh.SFTPNoSuchFile:
            pass
        except (OSError, asyncssh.Error) as exc:
            raise DeliveryFailed(f"sftp {name}: {exc}") from exc
