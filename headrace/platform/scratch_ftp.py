"""A throw-away FTP or FTPS server for tests: pyftpdlib on a loopback port, FTPS with a self-signed certificate."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.platform.processes import free_port


@dataclass(frozen=True)
class ScratchFtp:
    """Where a throw-away FTP server listens, who may log in, and (FTPS) the certificate a client must trust."""

    kind: str  # "ftp" or "ftps"
    host: str
    port: int
    user: str
    password: str
    root: Path  # the user's home, "/" on the server
    ca_cert: str | None  # FTPS: the server's self-signed certificate (PEM)

    def remote(self, local: Path) -> str:
        """A local path under root as the server names it."""
        return "/" + str(local.relative_to(self.root))


def self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """A key and a self-signed certificate for `host` (an address, and localhost), valid for a day: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headrace scratch ftps")])
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextmanager
def running_ftp(work_dir: Path, kind: str = "ftp", refused: frozenset[str] = frozenset()) -> Iterator[ScratchFtp]:
    """pyftpdlib in a thread of this process, one user with a random password; FTPS requires TLS on the control and
    data connections (explicit, AUTH TLS) with a self-signed certificate made now. `refused` commands (RNFR, MLSD…)
    are answered 500, as by a server that does not implement them."""
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

    # pyftpdlib logs every command and, polled as below, a start line per poll: it would drown the tests' output. A
    # handler of its own also keeps it from configuring logging for the whole process.
    quiet = logging.getLogger("pyftpdlib")
    quiet.setLevel(logging.WARNING)
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    base = work_dir / f"{kind}d-{secrets.token_hex(4)}"
    root = base / "files"
    root.mkdir(parents=True)
    host, user, password = "127.0.0.1", "headrace", secrets.token_urlsafe(12)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmwMT")
    ca_cert = None
    handler: Any
    if kind == "ftps":
        cert, key = self_signed(base, host)
        ca_cert = cert.read_text()
        handler = type("Handler", (TLS_FTPHandler,), {"certfile": str(cert), "keyfile": str(key)})
        handler.tls_control_required = True
        handler.tls_data_required = True
    else:
        handler = type("Handler", (FTPHandler,), {})
    handler.authorizer = authorizer
    handler.proto_cmds = {name: spec for name, spec in handler.proto_cmds.items() if name not in refused}
    handler.banner = "headrace scratch ftp"
    handler.auth_failed_timeout = 0  # pyftpdlib answers a wrong password after 3 s, which only slows tests down
    port = free_port()
    # A loop of its own: pyftpdlib's default is one per process, which two servers in two threads would share.
    server = FTPServer((host, port), handler, ioloop=IOLoop())
    stop = threading.Event()

    def serve() -> None:
        # pyftpdlib's loop is not thread-safe: it is polled here and stopped by the flag, never from another thread.
        while not stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=serve, name=f"scratch-{kind}", daemon=True)
    thread.start()
    try:
        yield ScratchFtp(kind, host, port, user, password, root, ca_cert)
    finally:
        stop.set()
        thread.join(timeout=10)
