"""SFTP host keys against a real sshd: trusted on first use and enforced after, by collectors, imports and exports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import asyncssh
import orjson
import pytest

from exporter.definitions import SftpDestination
from exporter.destinations import DeliveryFailed, open_destination
from headrace.filestores import open_store
from headrace.platform.scratch import ScratchSftp
from headrace.settings import Settings
from headrace.sftp import HostKeyChanged, KnownHosts, connect_sftp
from ingest.collectors.files import FileSourceError
from ingest.collectors.source_models import SftpSource
from tests.conftest import RunningPlatform

# The session's sshd named `localhost`: a host and port no other test records a key for.
HOST = "localhost"


@pytest.fixture
async def known(pool: asyncpg.Pool, sftp_server: ScratchSftp) -> AsyncIterator[KnownHosts]:
    known = KnownHosts(pool)
    await known.forget(HOST, sftp_server.port)
    yield known
    await known.forget(HOST, sftp_server.port)


def source(server: ScratchSftp, host_key: str | None = None) -> SftpSource:
    return SftpSource(
        host=HOST,
        port=server.port,
        user=server.user,
        private_key=server.client_key,
        host_key=host_key,
        pattern=f"{server.root}/*.csv",
    )


def another_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


async def connect_and_close(server: SftpSource, settings: Settings, pool: asyncpg.Pool) -> None:
    connection = await connect_sftp(server, settings, pool)
    connection.close()
    await connection.wait_closed()


async def test_first_use_records_the_key_and_a_changed_key_is_refused(
    platform: RunningPlatform,
    settings: Settings,
    pool: asyncpg.Pool,
    sftp_server: ScratchSftp,
    known: KnownHosts,
    storage_name: str,
) -> None:
    port = sftp_server.port
    sftp = source(sftp_server)
    (sftp_server.root / f"{storage_name}.csv").write_text("id\n1\n")
    await connect_and_close(sftp, settings, pool)
    recorded = await known.get(HOST, port)
    assert recorded is not None and recorded["public_key"].split()[:2] == sftp_server.host_public_key.split()[:2]
    listed = orjson.loads(platform.cli("sftp-host-keys", "list", "--json").stdout)
    assert [k["port"] for k in listed if k["host"] == HOST] == [port]
    await connect_and_close(sftp, settings, pool)  # the same key again: trusted

    # The server now presents another key than the one recorded (here: the record names another key).
    await pool.execute(
        "UPDATE headrace.sftp_host_keys SET public_key = $3 WHERE host = $1 AND port = $2", HOST, port, another_key()
    )
    changed = rf"host key changed for {HOST}:{port}: it now presents SHA256:\S+, not SHA256:\S+, recorded on first use"
    with pytest.raises(HostKeyChanged, match=changed):
        await connect_and_close(sftp, settings, pool)
    # One implementation for every SFTP user: collectors' sources and file imports, export destinations.
    with pytest.raises(FileSourceError, match="host key changed"):
        async with open_store(sftp, settings, pool):
            pass
    destination = SftpDestination(host=HOST, port=port, user=sftp_server.user, private_key=sftp_server.client_key)
    with pytest.raises(DeliveryFailed, match="host key changed"):
        async with open_destination(destination, settings, pool):
            pass
    url = f"sftp://{sftp_server.user}@{HOST}:{port}{sftp_server.root}/{storage_name}.csv"
    key = str(sftp_server.client_key_path)
    imported = platform.cli("storage", "import", storage_name, "--from", url, "--key", key, check=False)
    assert imported.returncode == 1 and "host key changed" in imported.stderr, imported.stderr

    # The key was replaced on purpose: forget it, and the next connection records the new one.
    forgotten = platform.cli("sftp-host-keys", "forget", HOST, "--port", str(port))
    assert "forgotten" in forgotten.stdout
    assert (
        orjson.loads(platform.cli("storage", "import", storage_name, "--from", url, "--key", key, "--json").stdout)[
            "rows"
        ]
        == 1
    )
    again = await known.get(HOST, port)
    assert again is not None and again["public_key"] == recorded["public_key"]


async def test_a_given_host_key_is_always_enforced(
    settings: Settings, pool: asyncpg.Pool, sftp_server: ScratchSftp, known: KnownHosts
) -> None:
    with pytest.raises(HostKeyChanged, match=rf"host key mismatch for {HOST}:\d+: .*not the configured host_key"):
        await connect_and_close(source(sftp_server, host_key=another_key()), settings, pool)
    await connect_and_close(source(sftp_server, host_key=sftp_server.host_public_key), settings, pool)
    assert await known.get(HOST, sftp_server.port) is None  # a given key is enforced, never recorded
    # A recorded key does not override a given one either.
    await known.record(HOST, sftp_server.port, sftp_server.host_public_key)
    with pytest.raises(HostKeyChanged, match="not the configured host_key"):
        await connect_and_close(source(sftp_server, host_key=another_key()), settings, pool)
