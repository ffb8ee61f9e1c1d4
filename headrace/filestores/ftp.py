"""FTP and FTPS (explicit TLS) as a file store with aioftp: passive, outbound-checked, every operation timed out."""

from __future__ import annotations

import asyncio
import fnmatch
import posixpath
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import aioftp

from headrace.filestores.base import CHUNK_BYTES, FileStoreError, RemoteFile, RenamingStore, bounded
from headrace.filestores.ftp_fields import FtpServer, tls_context
from headrace.outbound import OutboundPolicy, OutboundRefused, first_answering
from headrace.secrets import redact
from headrace.settings import Settings

_ERRORS = (OSError, aioftp.AIOFTPException, TimeoutError)
# What a server answers to a command it does not implement (500 unknown, 502 not implemented, 504 no such parameter).
_UNSUPPORTED = ("500", "502", "504")


def _code(exc: BaseException) -> str:
    return str(exc.received_codes[-1]) if isinstance(exc, aioftp.StatusCodeError) and exc.received_codes else ""


def _modified(info: dict[str, object]) -> float:
    """An MLSD `modify` fact (UTC, YYYYMMDDHHMMSS[.sss]) as seconds since the epoch; 0 when the server gives none."""
    text = str(info.get("modify") or "")
    try:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


class FtpStore(RenamingStore):
    """One control connection, which carries one command at a time: operations take turns (an export delivering
    several files at once sends them one after the other)."""

    def __init__(self, client: aioftp.Client, where: str, timeout: float) -> None:
        self.client = client
        self.where = where
        self.timeout = timeout
        self._turn = asyncio.Lock()

    def _failed(self, action: str, path: str, exc: BaseException) -> FileStoreError:
        if isinstance(exc, TimeoutError):
            return FileStoreError(f"{self.where}: cannot {action} {path}: no answer within {self.timeout:g} s")
        return FileStoreError(f"{self.where}: cannot {action} {path}: {redact(str(exc))}")

    async def list(self, pattern: str) -> list[RemoteFile]:
        folder, leaf = posixpath.split(pattern)
        if any(c in folder for c in "*?["):
            raise FileStoreError(f"{self.where}: an FTP pattern has wildcards in the file name only, not in {folder}")
        found: list[RemoteFile] = []
        try:
            async with self._turn, asyncio.timeout(self.timeout):
                # MLSD (exact sizes and UTC times); aioftp falls back to LIST when the server does not implement it.
                async for path, info in self.client.list(folder or "."):
                    leaf_name = PurePosixPath(path).name
                    if info.get("type") == "file" and fnmatch.fnmatchcase(leaf_name, leaf):
                        name = posixpath.join(folder, leaf_name)
                        found.append(RemoteFile(name, int(str(info.get("size") or 0)), _modified(dict(info))))
                        bounded(found, pattern)
        except aioftp.StatusCodeError as exc:
            if _code(exc).startswith("550"):
                return []  # no such folder, as on SFTP
            if _code(exc) in _UNSUPPORTED:
                raise FileStoreError(
                    f"{self.where}: the server cannot list {folder or '.'} (it implements neither MLSD nor LIST:"
                    f" {redact(str(exc))})"
                ) from exc
            raise self._failed("list", pattern, exc) from exc
        except _ERRORS as exc:
            raise self._failed("list", pattern, exc) from exc
        return found

    @asynccontextmanager
    async def _transfer(self, command: str, path: str) -> AsyncIterator[aioftp.DataConnectionThrottleStreamIO]:
        """One transfer on a data connection (RETR or STOR), taking its turn on the control connection and ended
        whatever happens: finished, or, given up half-way, closed with the server's reply to it read all the same,
        so that the next command gets its own answer."""
        action = "read" if command == "RETR" else "write"
        async with self._turn:
            try:
                async with asyncio.timeout(self.timeout):
                    stream = await self.client.get_stream(f"{command} {path}", "1xx")
            except _ERRORS as exc:
                raise self._failed(action, path, exc) from exc
            try:
                yield stream
            except BaseException as exc:
                stream.close()
                await self._settle()
                if isinstance(exc, _ERRORS):
                    raise self._failed(action, path, exc) from exc
                raise
            try:
                async with asyncio.timeout(self.timeout):
                    await stream.finish()
            except aioftp.StatusCodeError as exc:
                raise self._failed(action, path, exc) from exc
            except _ERRORS as exc:
                self.client.close()  # no reply in time: out of step, so closed (later operations fail, saying so)
                raise self._failed(action, path, exc) from exc

    async def _settle(self) -> None:
        """Read the final reply to a transfer given up half-way (226, or 426 once the server sees it closed)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.command(None, ("2xx", "4xx", "5xx"), "1xx")
        except _ERRORS:
            self.client.close()

    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        async with self._transfer("RETR", path) as stream:
            while True:
                async with asyncio.timeout(self.timeout):
                    chunk = await stream.read(CHUNK_BYTES)
                if not chunk:
                    break
                yield chunk

    async def _write(self, source: Path | bytes, remote: str) -> None:
        async with self._transfer("STOR", remote) as stream:
            if isinstance(source, bytes):
                async with asyncio.timeout(self.timeout):
                    await stream.write(source)
                return
            with source.open("rb") as local:
                while chunk := await asyncio.to_thread(local.read, CHUNK_BYTES):
                    async with asyncio.timeout(self.timeout):
                        await stream.write(chunk)

    async def _replace(self, temporary: str, name: str) -> None:
        try:
            async with self._turn, asyncio.timeout(self.timeout):
                try:
                    await self.client.rename(temporary, name)
                except aioftp.StatusCodeError as exc:
                    if _code(exc) in _UNSUPPORTED or not await self.client.exists(name):
                        raise
                    # Some servers (IIS…) refuse to rename over an existing file: remove it, then rename again.
                    await self._delete(name)
                    await self.client.rename(temporary, name)
        except aioftp.StatusCodeError as exc:
            if _code(exc) in _UNSUPPORTED:
                raise FileStoreError(
                    f"{self.where}: the server cannot rename files (RNFR/RNTO: {redact(str(exc))}); Headrace writes"
                    " each file under a temporary name and renames it into place, so no reader takes half a file"
                ) from exc
            raise self._failed("rename into", name, exc) from exc
        except _ERRORS as exc:
            raise self._failed("rename into", name, exc) from exc

    async def delete(self, name: str) -> None:
        async with self._turn:
            await self._delete(name)

    async def _delete(self, name: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.remove_file(name)
        except aioftp.StatusCodeError as exc:
            if not _code(exc).startswith("550"):  # 550: no such file, which is no error here
                raise self._failed("delete", name, exc) from exc
        except _ERRORS as exc:
            raise self._failed("delete", name, exc) from exc


async def _login(client: aioftp.Client, server: FtpServer, addresses: list[str]) -> None:
    await first_answering(addresses, lambda address: client.connect(address, server.port))
    if server.kind == "ftps":
        # Explicit TLS by hand rather than aioftp's upgrade_to_tls, which checks the certificate against the address
        # connected to: here it is checked against the host name the definition gives.
        await client.command("AUTH TLS", "234")
        await client.stream.start_tls(sslcontext=tls_context(server.ca_cert), server_hostname=server.host)
        await client.command("PBSZ 0", "200")
        await client.command("PROT P", "200")
        # The data connections (TLS too, PROT P) go to the same address: checked against the same name.
        client._siosocks_asyncio_kwargs = {"server_hostname": server.host}
    await client.login(server.user, server.password or "")


QUIT_SECONDS = 2.0


@asynccontextmanager
async def open_ftp(server: FtpServer, settings: Settings) -> AsyncIterator[FtpStore]:
    """A logged-in connection. Passive mode only (EPSV, else PASV), and the data connections go to the address the
    control connection reached whatever PASV names, so a server cannot point them at another host."""
    where = f"{server.kind}://{server.user}@{server.host}:{server.port}"
    timeout = settings.file_store_timeout_seconds
    client = aioftp.Client(
        socket_timeout=timeout,
        connection_timeout=timeout,
        path_timeout=timeout,
        passive_commands=("epsv", "pasv"),
        trust_server_pasv_ipv4_address=False,
    )
    try:
        addresses = await OutboundPolicy.from_settings(settings).resolve(server.host, server.port)
        async with asyncio.timeout(timeout):
            await _login(client, server, addresses)
    except (*_ERRORS, OutboundRefused) as exc:  # ssl.SSLError is an OSError
        client.close()
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else redact(str(exc))
        raise FileStoreError(f"cannot connect to {where}: {reason}") from None
    try:
        yield FtpStore(client, where, timeout)
    finally:
        # QUIT is a courtesy once every operation has its answer: an FTPS server that never completes it (seen with
        # pyftpdlib under load) must not hold a finished run for the whole operation timeout.
        try:
            async with asyncio.timeout(min(timeout, QUIT_SECONDS)):
                await client.quit()
        except _ERRORS:
            pass
        client.close()
