"""One face for the tests' file servers (OpenSSH's SFTP, pyftpdlib's FTP and FTPS), so one test body runs on each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.platform.scratch import ScratchSftp
from headrace.platform.scratch_ftp import ScratchFtp

KINDS = ("sftp", "ftp", "ftps")


@dataclass(frozen=True)
class FileServer:
    server: ScratchSftp | ScratchFtp
    kind: str

    @property
    def root(self) -> Path:
        """A local folder the server serves: a test writes its files here and reads what was delivered."""
        return self.server.root

    @property
    def secret(self) -> str:
        """The credential a definition carries, which must never be shown."""
        return self.server.password if isinstance(self.server, ScratchFtp) else self.server.client_key

    def remote(self, local: Path) -> str:
        """A path under root as the server names it (SFTP: the same absolute path; FTP: under the user's home)."""
        return self.server.remote(local) if isinstance(self.server, ScratchFtp) else str(local)

    def fields(self) -> dict[str, Any]:
        """A source's or destination's connection fields."""
        s = self.server
        common = {"kind": self.kind, "host": s.host, "port": s.port, "user": s.user}
        if isinstance(s, ScratchFtp):
            return common | {"password": s.password} | ({"ca_cert": s.ca_cert} if s.ca_cert else {})
        return common | {"private_key": s.client_key, "host_key": s.host_public_key}

    def url(self, local: Path, *, with_password: bool = False) -> str:
        s = self.server
        user = f"{s.user}:{s.password}" if with_password and isinstance(s, ScratchFtp) else s.user
        return f"{self.kind}://{user}@{s.host}:{s.port}{self.remote(local)}"

    def cli_credentials(self, work_dir: Path) -> list[str]:
        """The options `headrace storage import` takes for the server's credentials (FTP: its password is in the
        URL)."""
        s = self.server
        if isinstance(s, ScratchFtp):
            if not s.ca_cert:
                return []
            ca = work_dir / f"ca-{s.port}.pem"
            ca.write_text(s.ca_cert)
            return ["--ca-cert", str(ca)]
        return ["--key", str(s.client_key_path), "--host-key", s.host_public_key]
