"""A python step: the user's script in a subprocess with a timeout, given the ingest URL and a token to load with."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from headrace.flows.definitions import PythonStep

# What the run history keeps of a script's output: its last bytes, where tracebacks are.
OUTPUT_LIMIT = 64 * 1024
# The only variables of the service's environment a script inherits: none of its secrets (database, secret key).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE")


class ScriptFailed(RuntimeError):
    """The script exited non-zero or ran out of time: the user's error, never retried."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class ScriptResult:
    output: str
    seconds: float


def script_environment(ingest_url: str, token: str, flow: str, run_id: str, params: dict[str, Any]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k in INHERITED}
    return base | {
        "HEADRACE_URL": ingest_url,
        "HEADRACE_ADMIN_TOKEN": token,
        "HEADRACE_FLOW": flow,
        "HEADRACE_RUN_ID": run_id,
        "HEADRACE_PARAMS": orjson.dumps(params, default=str).decode(),
        "PYTHONUNBUFFERED": "1",
    }


def _tail(data: bytes) -> str:
    text = data[-OUTPUT_LIMIT:].decode(errors="replace")
    return text if len(data) <= OUTPUT_LIMIT else "…" + text


async def run_script(step: PythonStep, environment: dict[str, str]) -> ScriptResult:
    """Run the script with this interpreter in a scratch directory, in its own process group (killed whole on a
    timeout); stdout and stderr together, as the run history shows them."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with tempfile.TemporaryDirectory(prefix="headrace-step-") as scratch:
        script = Path(scratch) / "step.py"
        script.write_text(step.code)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=scratch,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(step.timeout_seconds):
                output, _ = await process.communicate()
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = await process.communicate()
            raise ScriptFailed(
                f"the script ran past its timeout of {step.timeout_seconds:g} s", _tail(output)
            ) from None
        except asyncio.CancelledError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
    text = _tail(output)
    if process.returncode != 0:
        last = text.strip().splitlines()[-1:] or [""]
        raise ScriptFailed(f"the script exited with status {process.returncode}: {last[0][:300]}", text)
    return ScriptResult(text, loop.time() - started)
