"""SFTP connections for collectors, file imports and exports: outbound-checked, host keys trusted on first use."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import asyncssh

from headrace.outbound import OutboundPolicy, first_answering
from headrace.settings import Settings

log = logging.getLogger(__name__)


class SftpServer(Protocol):
    """What a definition says of an SFTP server (collector sources, export destinations and upload steps have these)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str | None: ...
    @property
    def private_key(self) -> str | None: ...
    @property
    def host_key(self) -> str | None: ...


class HostKeyChanged(asyncssh.HostKeyNotVerifiable):
    """The server presented another key than the one configured or recorded on first use: nothing was sent to it."""


def fingerprint(public_key: str) -> str:
    return asyncssh.import_public_key(public_key).get_fingerprint("sha256")


class KnownHosts:
    """Host keys recorded on first use, in headrace.sftp_host_keys: one trusted key per host and port."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, host: str, port: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT public_key, recorded_at FROM headrace.sftp_host_keys WHERE host = $1 AND port = $2",
            host.lower(),
            port,
        )

    async def record(self, host: str, port: int, public_key: str) -> str:
        """Record the key unless one is recorded already, and return the one that is: the first recorded wins, so
        two instances connecting for the first time at once end up trusting the same key."""
        await self.pool.execute(
            "INSERT INTO headrace.sftp_host_keys (host, port, public_key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            host.lower(),
            port,
            public_key,
        )
        row = await self.get(host, port)
        assert row is not None
        recorded: str = row["public_key"]
        return recorded

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT host, port, public_key, recorded_at FROM headrace.sftp_host_keys ORDER BY host, port"
        )
        return [dict(r) | {"fingerprint": fingerprint(r["public_key"])} for r in rows]

    async def forget(self, host: str, port: int) -> bool:
        """Drop a recorded key (the server's key was replaced on purpose): the next connection records the new one."""
        status = await self.pool.execute(
            "DELETE FROM headrace.sftp_host_keys WHERE host = $1 AND port = $2", host.lower(), port
        )
        return not status.endswith(" 0")


async def connect_sftp(server: SftpServer, settings: Settings, pool: asyncpg.Pool) -> asyncssh.SSHClientConnection:
    """An SSH connection to the server, which must present its configured `host_key`, else the key recorded the first
    time Headrace connected to it (recorded now if this is the first time).

    The host is checked against the outbound policy, and the connection goes to the checked address. The key is
    checked during the handshake, before any password or key is offered.
    """
    addresses = await OutboundPolicy.from_settings(settings).resolve(server.host, server.port)
    # No ~/.ssh/config of the service's user: a definition says all there is to say about the connection.
    common: dict[str, Any] = {"port": server.port, "config": None}
    known = KnownHosts(pool)
    recorded_at: datetime | None = None
    if server.host_key:
        trusted = server.host_key
    else:
        row = await known.get(server.host, server.port)
        if row is not None:
            trusted, recorded_at = row["public_key"], row["recorded_at"]
        else:
            presented = await first_answering(addresses, lambda a: asyncssh.get_server_host_key(a, **common))
            if presented is None:
                raise asyncssh.HostKeyNotVerifiable(f"{server.host}:{server.port} presented no host key")
            trusted = await known.record(server.host, server.port, presented.export_public_key().decode().strip())
            log.info(
                "sftp host key recorded on first use",
                extra={"host": server.host, "port": server.port, "fingerprint": fingerprint(trusted)},
            )
    options = common | {
        "username": server.user,
        "client_keys": [asyncssh.import_private_key(server.private_key)] if server.private_key else None,
        "password": server.password or None,
        "known_hosts": ([asyncssh.import_public_key(trusted)], [], []),
        # A server that accepts the connection and then says nothing must not hold a run (the caller bounds the
        # whole connection too, host-key fetch included: headrace/filestores/sftp.py).
        "connect_timeout": settings.file_store_timeout_seconds,
    }
    try:
        return await first_answering(addresses, lambda a: asyncssh.connect(a, **options))
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyChanged(await _changed_message(server, addresses, trusted, recorded_at, common)) from None


async def _changed_message(
    server: SftpServer, addresses: list[str], trusted: str, recorded_at: datetime | None, common: dict[str, Any]
) -> str:
    where = f"{server.host}:{server.port}"
    try:
        presented = await first_answering(addresses, lambda a: asyncssh.get_server_host_key(a, **common))
        now = f"it now presents {presented.get_fingerprint('sha256')}" if presented else "it presents no key"
    except (OSError, asyncssh.Error):
        now = "it presents another key"
    if recorded_at is None:
        return f"host key mismatch for {where}: {now}, not the configured host_key {fingerprint(trusted)}"
    return (
        f"host key changed for {where}: {now}, not {fingerprint(trusted)}, recorded on first use at"
        f" {recorded_at:%Y-%m-%d %H:%M:%S}Z. If the server's key was replaced on purpose, run"
        f" `headrace sftp-host-keys forget {server.host} --port {server.port}` (or set its key as host_key)"
    )
