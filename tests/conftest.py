"""The tests' fixtures: the fake server, the reader in-process, sockets to listen on, a tiny disk, default signals.

The autouse ones keep the caller's variables, a service manager, logging and secrets out of every test;
plain helpers are in helpers.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import GREETING, FakeMinechatServer
from helpers import (
    CLIENT_VARIABLES,
    DEFAULT_SIGNALS,
    MAX_SOCKET_PATH,
    SERVICE_VARIABLES,
    TOKEN,
    Listener,
    Reader,
    RecordingOut,
    StartReader,
    StdinPipe,
    reader_settings,
    start_reader_task,
    stop,
)

from _minechat.view import Mark

# Connections that fill a listen(0) backlog, with room to spare (Linux takes one more than the backlog).
BACKLOG_FILLERS = 4


@pytest.fixture(autouse=True)
def no_client_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the caller's HOST, TOKEN, VERBOSE and the like away from clients run in-process."""
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep clients run in-process from notifying a service manager the tests may run under."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo what a client's main() did to the root logger, whose stream the test's capture closes."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def restore_stop_signals() -> Iterator[None]:
    """Undo a client's main() ignoring the stop signals on its way out: children would inherit that, and keep it."""
    saved = {signum: signal.getsignal(signum) for signum in DEFAULT_SIGNALS}
    yield
    for signum, handler in saved.items():
        if handler is not None:
            signal.signal(signum, handler)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeMinechatServer]:
    # A sender's default chat to watch, port 5000, is not the fake server's and may be anyone's here:
    # in-process senders watch a port that refuses instead, unless a test gives --read-port.
    import send_client

    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # bound, never listening
        monkeypatch.setattr(send_client, "DEFAULT_READ_PORT", refusing.getsockname()[1])
        async with FakeMinechatServer() as running:
            yield running


@pytest.fixture
async def start_reader(server: FakeMinechatServer, tmp_path: Path) -> AsyncIterator[StartReader]:
    """Start read_client in-process against the fake server, with tiny backoff delays; stopped at the end."""
    readers: list[Reader] = []

    async def start(
        port: int | None = None,
        log_path: Path | None = None,
        out: RecordingOut | None = None,
        host: str = "127.0.0.1",
        now: Callable[[], float] = time.time,
        time_format: str = "[%d.%m.%y %H:%M]",
        history_format: str = "text",
        backlog: int = 10,
        ignore: tuple[str, ...] = (),
        highlight: tuple[str, ...] = (),
        mark: Mark | None = None,  # how a terminal marks lines; None: stdout is no terminal
    ) -> Reader:
        settings = reader_settings(
            server,
            log_path or tmp_path / "chat.log",
            host=host,
            port=port or server.read_port,
            time_format=time_format,
            history_format=history_format,
            backlog=backlog,
            ignore=ignore,
            highlight=highlight,
        )
        reader = start_reader_task(settings, out, now, mark)
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        await stop(reader)


@pytest.fixture
async def resetting_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A posting port that greets, takes the token, and resets the connection instead of replying."""
    took_token = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await writer.drain()
        await reader.readline()
        took_token.set()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], took_token
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.fixture
async def account(server: FakeMinechatServer) -> AsyncIterator[str]:
    yield server.add_account("Focused Loyd", TOKEN)


@pytest.fixture
def stdin_pipe() -> Iterator[StdinPipe]:
    pipe = StdinPipe()
    yield pipe
    pipe.close()


@pytest.fixture
def silent_listener() -> socket.socket:
    """A listening socket that no client should ever reach."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listener never accepts, its backlog full: a connect there hangs on Linux."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(BACKLOG_FILLERS):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            yield port
        finally:
            for filler in fillers:
                filler.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd's, and its path."""
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX datagram sockets here")
    folder = tmp_path
    if len(str(folder / "notify")) > MAX_SOCKET_PATH:
        folder = Path(tempfile.mkdtemp(prefix="notify"))
    path = str(folder / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()
    with suppress(OSError):
        os.unlink(path)


@pytest.fixture
async def listener(notify_socket: tuple[socket.socket, str]) -> AsyncIterator[Listener]:
    collecting = Listener(notify_socket[0])
    task = asyncio.create_task(collecting.run())
    yield collecting
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system of its own (tmpfs), to be filled up; only for root on Linux."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root on Linux")
    folder = tmp_path / "tiny"
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        # Lazily if a file is still open there (a failing test): a mount left behind breaks later runs' cleanup.
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def default_signal_handlers() -> Iterator[None]:
    """Python's own handlers for SIGINT, SIGTERM and SIGHUP during a test that signals itself.

    Whatever the suite was started with (nohup, trap '' INT TERM): a client keeps a signal ignored
    that it found ignored, so the test would wait for a signal that never arrives.
    """
    saved = {signum: signal.getsignal(signum) for signum in DEFAULT_SIGNALS}
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)
