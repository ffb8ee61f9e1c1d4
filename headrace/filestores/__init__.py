"""File stores: SFTP, FTP, FTPS and S3 behind one interface, opened from a definition's fields by their `kind`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, cast

import asyncpg

from headrace.filestores.base import CHUNK_BYTES, MAX_LISTED, FileStore, FileStoreError, RemoteFile, temporary_name
from headrace.settings import Settings

__all__ = [
    "CHUNK_BYTES",
    "FILE_KINDS",
    "MAX_LISTED",
    "FileStore",
    "FileStoreError",
    "Location",
    "RemoteFile",
    "open_store",
    "temporary_name",
]

FILE_KINDS = ("sftp", "ftp", "ftps", "s3")


class Location(Protocol):
    """A definition's file source or destination: its `kind` says which protocol's fields it has (SftpServer,
    FtpServer or S3Bucket)."""

    @property
    def kind(self) -> str: ...


def open_store(location: Location, settings: Settings, pool: asyncpg.Pool) -> AbstractAsyncContextManager[FileStore]:
    """A connection to the location's server or bucket, once its host passed the outbound policy (and, on SFTP, its
    host key; `pool` keeps the keys recorded on first use); FileStoreError if it cannot be had."""
    # Imported here: a service that never meets a protocol does not load its client library.
    if location.kind == "sftp":
        from headrace.filestores.sftp import open_sftp
        from headrace.sftp import SftpServer

        return open_sftp(cast(SftpServer, location), settings, pool)
    if location.kind in ("ftp", "ftps"):
        from headrace.filestores.ftp import open_ftp
        from headrace.filestores.ftp_fields import FtpServer

        return open_ftp(cast(FtpServer, location), settings)
    if location.kind == "s3":
        from headrace.filestores.s3 import S3Bucket, open_s3

        return open_s3(cast(S3Bucket, location), settings)
    raise FileStoreError(f"no file store speaks {location.kind!r}: use one of {', '.join(FILE_KINDS)}")
