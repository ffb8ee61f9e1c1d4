"""Where exports are delivered: a Destination puts whole files under their final names, or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from headrace.filestores import FileStore, FileStoreError, Location, open_store
from headrace.settings import Settings


class DeliveryFailed(RuntimeError):
    """The destination refused or lost a file; the run stops and writes no report."""


@contextmanager
def _delivery() -> Iterator[None]:
    """A file store's error, as the run's DeliveryFailed."""
    try:
        yield
    except FileStoreError as exc:
        raise DeliveryFailed(str(exc)) from exc


class Destination:
    """An open connection to one destination for the length of a run, whatever its file store (S3, SFTP, FTP, FTPS):
    the store gives the guarantee (an S3 upload completes or is not there; a file server's file is written under a
    temporary name, then renamed), this turns its errors into DeliveryFailed."""

    def __init__(self, location: Location, settings: Settings, pool: asyncpg.Pool) -> None:
        self.location = location
        self.settings = settings
        self.pool = pool
        self._stack = AsyncExitStack()
        self._store: FileStore | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        with _delivery():
            self._store = await self._stack.enter_async_context(open_store(self.location, self.settings, self.pool))

    async def close(self) -> None:
        self._store = None
        await self._stack.aclose()

    @property
    def store(self) -> FileStore:
        assert self._store is not None, "the destination is used between open() and close()"
        return self._store

    async def put_file(self, local: Path, name: str) -> None:
        """Deliver a local file so that `name` appears only once it is complete."""
        with _delivery():
            await self.store.put_file(local, name)

    async def put_bytes(self, data: bytes, name: str) -> None:
        """Deliver a small object (a report, a manifest) with the same guarantee."""
        with _delivery():
            await self.store.put_bytes(data, name)

    async def delete(self, name: str) -> None:
        """Remove a file a failed attempt left; a name that is not there is no error."""
        with _delivery():
            await self.store.delete(name)


def open_destination(destination: Location, settings: Settings, pool: asyncpg.Pool) -> Destination:
    """The Destination for a definition's destination settings; `settings` bound which hosts it may reach, `pool`
    keeps SFTP host keys."""
    return Destination(destination, settings, pool)
