"""Where exports are delivered: a Destination puts whole files under their final names, or nothing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from headrace.settings import Settings


class DeliveryFailed(RuntimeError):
    """The destination refused or lost a file; the run stops and writes no report."""


class Destination(ABC):
    """An open connection to one destination for the length of a run."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:  # noqa: B027 - connectionless destinations need nothing
        """Connect."""

    async def close(self) -> None:  # noqa: B027
        """Disconnect."""

    @abstractmethod
    async def put_file(self, local: Path, name: str) -> None:
        """Deliver a local file so that `name` appears only once it is complete."""

    @abstractmethod
    async def put_bytes(self, data: bytes, name: str) -> None:
        """Deliver a small object (a report, a manifest) with the same guarantee."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove a file a failed attempt left; a name that is not there is no error."""


def open_destination(destination: object, settings: Settings, pool: asyncpg.Pool) -> Destination:
    """The Destination for a definition's destination settings; `settings` bound which hosts it may reach, `pool`
    keeps SFTP host keys."""
    from exporter.definitions import S3Destination, SftpDestination

    if isinstance(destination, S3Destination):
        from exporter.destinations.s3 import S3

        return S3(destination, settings)
    if isinstance(destination, SftpDestination):
        from exporter.destinations.sftp import Sftp

        return Sftp(destination, settings, pool)
    raise TypeError(f"no destination for {type(destination).__name__}")
