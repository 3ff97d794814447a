"""What the new tests of the sender share: settings for the fake server, a stdin pipe, the command in a subprocess.

No test module imports another; these modules import this one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import ROOT, WAIT, client_env
from fake_server import FakeMinechatServer

import send_client
from send_client import SenderSettings

TOKEN = "5210a154-74ca-11e9-9d4f-0242ac110002"
POLL_SECONDS = 0.005
SUBPROCESS_WAIT = 20.0


@contextmanager
def closed_port() -> Iterator[int]:
    """Hold a port on 127.0.0.1 that refuses every connection (bound, never listening) while the block runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def settings_for(
    server: FakeMinechatServer, tmp_path: Path, *argv: str, read_port: int | None = None
) -> SenderSettings:
    """Parse sender settings aimed at the fake server, watching its chat unless read_port says another port."""
    watched = server.read_port if read_port is None else read_port
    base = ["--host", "127.0.0.1", "--port", str(server.write_port), "--read-port", str(watched)]
    return send_client.parse_settings([*base, "--token_path", str(tmp_path / "token.txt"), *argv], {}, tmp_path)


def texts_of(server: FakeMinechatServer, acknowledged_only: bool = False) -> list[str]:
    """Return the one-line posts the server took, in order."""
    return [" | ".join(post.lines) for post in server.posts if post.acknowledged or not acknowledged_only]


async def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait until predicate holds of state in this process (the sender's), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the awaited state never came")
        await asyncio.sleep(POLL_SECONDS)


class StdinPipe:
    """A real pipe standing in for stdin, written by the test as it goes."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()
        self.reader = os.fdopen(read_end, "rb", buffering=0)

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_end, view) :]

    def end(self) -> None:
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1

    def close(self) -> None:
        self.end()
        self.reader.close()


async def spawn_client(
    server: FakeMinechatServer, cwd: Path, *argv: str, **options: object
) -> asyncio.subprocess.Process:
    """Start send_client.py against the server, stdin, stdout and stderr piped unless told otherwise."""
    streams: dict[str, object] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    streams.update(options)
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1", "--port", str(server.write_port),
        *argv, cwd=cwd, env=client_env(), **streams,  # type: ignore[arg-type]
    )  # fmt: skip


async def run_client(
    server: FakeMinechatServer, cwd: Path, *argv: str, stdin: bytes | None = b""
) -> tuple[int, str, str]:
    """Run send_client.py against the server to its end; return its exit code, stdout and stderr."""
    process = await spawn_client(server, cwd, *argv)
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), SUBPROCESS_WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def read_stderr_until(process: asyncio.subprocess.Process, text: bytes, timeout: float = WAIT * 3) -> bytes:
    """Read the process's stderr until a line holds text; return everything read."""
    assert process.stderr is not None
    seen = b""

    async def read() -> None:
        nonlocal seen
        while text not in seen:
            line = await process.stderr.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"stderr ended without {text!r}: {seen.decode(errors='replace')}")
            seen += line

    await asyncio.wait_for(read(), timeout)
    return seen
