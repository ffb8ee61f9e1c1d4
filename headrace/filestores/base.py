"""The file-store interface collectors, imports, exports and upload steps share, whatever the protocol behind it."""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1024 * 1024
# The most files one pattern may match: a listing is held whole (it is sorted, then recorded with the batch).
MAX_LISTED = 100_000


class FileStoreError(RuntimeError):
    """A server could not be reached, or a file listed, read, written, renamed or deleted: the message says which,
    with every credential masked."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    modified: float  # seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "modified": self.modified}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(data["path"], int(data["size"]), float(data["modified"]))


def temporary_name(name: str) -> str:
    """Where a file is written before it is renamed into place: beside it, hidden, so no folder is needed."""
    folder, leaf = posixpath.split(name)
    return posixpath.join(folder, f".{leaf}.part")


def bounded(found: list[RemoteFile], pattern: str) -> list[RemoteFile]:
    if len(found) > MAX_LISTED:
        raise FileStoreError(f"{pattern} matches more than {MAX_LISTED} files: narrow the pattern")
    return found


class FileStore(ABC):
    """One open connection to a file server or a bucket, for the length of a run."""

    where: str  # the server as messages name it, without credentials: sftp://user@host:22, s3://bucket

    @abstractmethod
    async def list(self, pattern: str) -> list[RemoteFile]:
        """The regular files a glob matches (none when its folder is missing)."""

    @abstractmethod
    def read(self, path: str) -> AsyncGenerator[bytes, None]:
        """A file's bytes, CHUNK_BYTES at a time."""

    @abstractmethod
    async def put_file(self, local: Path, name: str) -> None:
        """Deliver a local file so that `name` appears only once it is complete (replacing what was there)."""

    @abstractmethod
    async def put_bytes(self, data: bytes, name: str) -> None:
        """Deliver a small object (a report, a manifest) with the same guarantee."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove a file; a name that is not there is no error."""


class RenamingStore(FileStore):
    """A file server, where `name` appears complete by writing a temporary file beside it, then renaming it: one
    implementation of that dance for SFTP and FTP, each giving the protocol's write and rename."""

    @abstractmethod
    async def _write(self, source: Path | bytes, remote: str) -> None:
        """Write a local file or bytes to `remote`, replacing it."""

    @abstractmethod
    async def _replace(self, temporary: str, name: str) -> None:
        """Rename `temporary` to `name`, replacing a file already there."""

    async def put_file(self, local: Path, name: str) -> None:
        await self._put(local, name)

    async def put_bytes(self, data: bytes, name: str) -> None:
        await self._put(data, name)

    async def _put(self, source: Path | bytes, name: str) -> None:
        temporary = temporary_name(name)
        try:
            await self._write(source, temporary)
            await self._replace(temporary, name)
        except FileStoreError:
            try:
                await self.delete(temporary)  # no hidden leftover, whether the write or the rename failed
            except FileStoreError:
                pass
            raise
