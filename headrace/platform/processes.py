"""Child processes that die with their parent, free ports, and waiting for a port to answer."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import IO

import aiohttp

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If `headrace up` is killed outright, the kernel sends its children SIGTERM instead of orphaning them.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(
    args: list[str], log_file: Path, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so a terminal's Ctrl-C reaches only the supervisor), logging to a file.

    Call it from the event loop's thread, never a worker thread: the kernel sends the death signal when the thread
    that forked the child ends, not only when the process does.
    """
    log: IO[bytes] = open(log_file, "ab")
    try:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            user=user,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{_program(process)} exited with {process.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s") from None
            await asyncio.sleep(0.1)


def _program(process: subprocess.Popen[bytes]) -> str:
    """The program a child runs: the first of its arguments (spawn's are a list)."""
    args = process.args
    return os.fsdecode(args if isinstance(args, str | bytes | os.PathLike) else args[0])


async def terminate(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a child and wait for it; kill it if it outstays the timeout."""
    if process.poll() is not None:
        return
    try:
        os.kill(process.pid, sig)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while process.poll() is None:
        if loop.time() > deadline:
            process.kill()
            await asyncio.to_thread(process.wait)
            return
        await asyncio.sleep(0.05)


async def wait_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait until a child exits and return its exit code (negative: the signal that ended it).

    A pidfd becomes readable when the process exits, so the loop learns of it at once without polling.
    """
    code = process.poll()
    if code is not None:
        return code
    fd = os.pidfd_open(process.pid)  # an exited child stays a zombie until we reap it, so the pid is still ours
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return process.wait()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _exited(process: subprocess.Popen[bytes] | asyncio.subprocess.Process) -> bool:
    if isinstance(process, subprocess.Popen):
        return process.poll() is not None
    return process.returncode is not None


def admin_headers(token: str | None) -> dict[str, str]:
    """The header a request to a service carries its admin token in (probes send it too, whichever routes ask)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def wait_ready(
    url: str,
    process: subprocess.Popen[bytes] | asyncio.subprocess.Process,
    timeout: float = 60,
    token: str | None = None,
) -> None:
    """Wait until a service answers 200 on /readyz; fail at once if its process exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), headers=admin_headers(token)) as session:
        while True:
            if _exited(process):
                raise RuntimeError(f"exited with {process.returncode} before it was ready")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s")
            await asyncio.sleep(0.2)
