"""FTP and FTPS on real pyftpdlib servers: certificates, no rename or list, timeouts, outbound policy, secrets, CLI."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import aioftp
import asyncpg
import orjson
import pytest
from pydantic import TypeAdapter

from headrace.filestores import FileStoreError, base, open_store
from headrace.filestores.ftp_fields import FtpFields
from headrace.flows.retry import is_transient
from headrace.platform.processes import free_port
from headrace.platform.scratch_ftp import ScratchFtp, running_ftp
from headrace.secrets import MASK
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition, CollectorStore
from ingest.collectors.files import parse_file
from ingest.collectors.source_models import FileSource
from tests.conftest import RunningPlatform
from tests.eventually import eventually
from tests.file_servers import FileServer


def fields(server: ScratchFtp, **changes: object) -> FtpFields:
    given = {
        "kind": server.kind,
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "ca_cert": server.ca_cert,
    }
    return FtpFields.model_validate(given | changes)


@pytest.fixture(scope="module")
def limited_server(work_dir: Path) -> Iterator[ScratchFtp]:
    """An FTP server that implements neither rename (RNFR, RNTO) nor listing (MLSD, LIST)."""
    with running_ftp(work_dir, "ftp", frozenset({"RNFR", "RNTO", "MLSD", "LIST"})) as server:
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word (no FTP greeting)."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        yield port


async def test_ftps_checks_the_certificate_against_the_host_name(
    settings: Settings, pool: asyncpg.Pool, ftps_server: ScratchFtp
) -> None:
    """Without ca_cert the system's CAs do not know the self-signed server: refused. With it, the name in the
    definition (here localhost, reached at 127.0.0.1) is what the control and data connections are checked against."""
    with pytest.raises(FileStoreError, match="CERTIFICATE_VERIFY_FAILED") as refused:
        async with open_store(fields(ftps_server, ca_cert=None), settings, pool):
            pass
    assert ftps_server.password not in str(refused.value)
    (ftps_server.root / "checked.csv").write_text("id\n1\n")
    async with open_store(fields(ftps_server, host="localhost"), settings, pool) as store:
        [listed] = await store.list("/checked.csv")
        assert listed.path == "/checked.csv" and listed.size == 5
        assert b"".join([chunk async for chunk in store.read(listed.path)]) == b"id\n1\n"


async def test_a_server_that_cannot_rename_or_list_is_named_clearly(
    settings: Settings, pool: asyncpg.Pool, limited_server: ScratchFtp
) -> None:
    async with open_store(fields(limited_server), settings, pool) as store:
        with pytest.raises(FileStoreError, match="the server cannot rename files"):
            await store.put_bytes(b"report", "/out.report")
        with pytest.raises(FileStoreError, match="the server cannot list /"):
            await store.list("/*.csv")
    assert [p.name for p in limited_server.root.iterdir()] == []  # the temporary file was removed


async def test_a_silent_server_times_out_and_an_upload_step_would_retry(
    settings: Settings, pool: asyncpg.Pool, silent_port: int
) -> None:
    impatient = settings.model_copy(update={"file_store_timeout_seconds": 0.5})
    silent = FtpFields(kind="ftp", host="127.0.0.1", port=silent_port, user="u", password="pw")
    with pytest.raises(FileStoreError, match=r"no answer within 0\.5 s") as timed_out:
        async with open_store(silent, impatient, pool):
            pass
    assert is_transient(timed_out.value)


async def test_a_refused_login_is_not_retried_and_names_no_password(
    settings: Settings, pool: asyncpg.Pool, ftp_server: ScratchFtp
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(FileStoreError, match="530") as refused:
        async with open_store(fields(ftp_server, password=wrong), settings, pool):
            pass
    assert wrong not in str(refused.value) and not is_transient(refused.value)


async def test_the_outbound_policy_applies(settings: Settings, pool: asyncpg.Pool, ftp_server: ScratchFtp) -> None:
    closed = settings.model_copy(update={"outbound_allow": ""})
    with pytest.raises(FileStoreError, match="loopback address"):
        async with open_store(fields(ftp_server), closed, pool):
            pass


async def test_an_ftp_password_is_sealed_at_rest_and_masked(
    settings: Settings, pool: asyncpg.Pool, ftps_server: ScratchFtp
) -> None:
    """Given in the URL, the password becomes the `password` field: sealed in Postgres, *** when shown."""
    name = f"ftp_{uuid.uuid4().hex[:8]}"
    s = ftps_server
    url = f"ftps://{s.user}:{s.password}@{s.host}:{s.port}/in/*.csv"
    definition = CollectorDefinition.model_validate(
        {"name": name, "storage": name, "source": {"kind": "ftps", "url": url, "ca_cert": s.ca_cert}}
    )
    collectors = CollectorStore(pool, settings)
    collector = await collectors.create(definition)
    try:
        shown = collector.to_json()["source"]
        assert shown["password"] == MASK and shown["ca_cert"] == s.ca_cert and shown["pattern"] == "/in/*.csv"
        stored = await pool.fetchval("SELECT definition::text FROM headrace.collectors WHERE name = $1", name)
        assert s.password not in stored
        assert (await collectors.get(name)).definition.source.password == s.password  # type: ignore[union-attr]
    finally:
        await collectors.delete(name)


def test_ca_cert_is_for_ftps_and_must_be_pem() -> None:
    with pytest.raises(ValueError, match="ca_cert is for ftps"):
        FtpFields(kind="ftp", host="h", ca_cert="-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="not PEM certificate text"):
        FtpFields(kind="ftps", host="h", ca_cert="not a certificate")


async def test_the_cli_collects_from_and_exports_to_ftps(
    platform: RunningPlatform, ftps_server: ScratchFtp, storage_name: str, tmp_path: Path
) -> None:
    """`collector create --from ftps://…` and `export create --destination ftps`, each trusting the server's
    certificate given as --ca-cert: the password is stored, shown as ***, and the files go both ways."""
    s = ftps_server
    ca = tmp_path / "server.pem"
    ca.write_text(s.ca_cert or "")
    inbox, outbox = s.root / f"in_{storage_name}", s.root / f"out_{storage_name}"
    inbox.mkdir()
    outbox.mkdir()
    (inbox / "a.csv").write_text("id,hit_time_utc\n1,2021-04-08T10:05:00Z\n2,2021-04-08T11:10:00Z\n")
    url = f"ftps://{s.user}:{s.password}@{s.host}:{s.port}{s.remote(inbox)}/*.csv"
    created = platform.cli_json("collector", "create", storage_name, "--storage", storage_name, "--from", url,
                                "--ca-cert", str(ca))  # fmt: skip
    assert created["source"]["password"] == MASK and s.password not in orjson.dumps(created).decode()
    assert [b["rows"] for b in platform.cli_json("collector", "run", storage_name)["batches"]] == [2]

    destination = ["--destination", "ftps", "--host", s.host, "--port", str(s.port), "--user", s.user]
    destination += ["--password", s.password, "--ca-cert", str(ca), "--folder", s.remote(outbox)]
    export = platform.cli_json("export", "create", storage_name, "--source", storage_name, *destination,
                               "--no-schedule")  # fmt: skip
    assert export["destination"]["password"] == MASK and export["destination"]["ca_cert"] == s.ca_cert
    exported = 0

    async def run_until_all_exported() -> bool:
        # Rows transform has not written yet leave in a later run; each run ships only what is new.
        nonlocal exported
        exported += (await asyncio.to_thread(platform.cli_json, "export", "run", storage_name))["rows"]
        return exported >= 2

    await eventually(run_until_all_exported, what="both collected rows exported", interval=0.5)
    names = sorted(p.name for p in outbox.iterdir())
    assert [n for n in names if "_data_" in n and "_2021-04-08_10_" in n] and [n for n in names if "_11_" in n]
    assert [n for n in names if n.endswith("_delivery.report")] and not [n for n in names if n.endswith(".part")]


async def test_a_file_that_fails_to_parse_leaves_the_connection_usable(
    settings: Settings, pool: asyncpg.Pool, ftp_server: ScratchFtp
) -> None:
    """The control connection carries one transfer at a time: a read given up half-way must end its transfer."""
    folder = ftp_server.root / f"bad_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "bad.ndjson").write_bytes(b'{"id": 1}\nnot json\n' + b'{"id": 2}\n' * 200_000)
    (folder / "good.ndjson").write_bytes(b'{"id": 3}\n')
    async with open_store(fields(ftp_server), settings, pool) as store:
        with pytest.raises(FileStoreError, match="line 2 is not JSON"):
            async for _ in parse_file(store, f"{ftp_server.remote(folder)}/bad.ndjson", "ndjson"):
                pass
        assert len(await store.list(f"{ftp_server.remote(folder)}/*.ndjson")) == 2
        good = [r async for rs in parse_file(store, f"{ftp_server.remote(folder)}/good.ndjson", "ndjson") for r in rs]
        assert good == [{"id": 3}]


async def test_a_listing_is_bounded_on_every_file_server(
    settings: Settings, pool: asyncpg.Pool, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = file_server.root / f"many_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    for index in range(3):
        (folder / f"{index}.csv").write_text("id\n1\n")
    pattern = f"{file_server.remote(folder)}/*.csv"
    source = TypeAdapter(FileSource).validate_python(file_server.fields() | {"pattern": pattern})
    async with open_store(source, settings, pool) as store:
        assert len(await store.list(pattern)) == 3
        monkeypatch.setattr(base, "MAX_LISTED", 2)
        with pytest.raises(FileStoreError, match="matches more than 2 files"):
            await store.list(pattern)


def test_an_ftp_4xx_reply_is_transient_and_a_5xx_is_not() -> None:
    """RFC 959's reply classes decide whether an upload step tries again (the 530 of a real server is above)."""
    busy = aioftp.StatusCodeError(aioftp.Code("226"), aioftp.Code("421"), ["Too many connections."])
    denied = aioftp.StatusCodeError(aioftp.Code("226"), aioftp.Code("550"), ["Permission denied."])
    assert is_transient(busy) and not is_transient(denied)
