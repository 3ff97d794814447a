"""Reporting to systemd: the notify datagrams on a real AF_UNIX socket, from the notifier and from read_client."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from conftest import WAIT

import chat_io
from chat_io import ServiceNotifier, parse_notify_address, parse_watchdog_period

# AF_UNIX paths are short: 104 bytes on macOS, 108 on Linux.
MAX_SOCKET_PATH = 100
# A started Python may take a while on a busy machine before it says anything.
START_WAIT = 15.0
WATCHDOG_USEC = 1_000_000
PINGS_TO_MEASURE = 5

needs_af_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX datagram sockets here")
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract socket names are Linux's")


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/user/1000/systemd/notify", "/run/user/1000/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
        ("relative/notify", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address(value: str | None, address: str | None) -> None:
    assert parse_notify_address(value) == address


@pytest.mark.parametrize(
    ("usec", "pid", "period"),
    [
        (None, None, None),
        ("", None, None),
        ("1000000", None, 1.0),
        ("30000000", "", 30.0),
        ("1000000", "4242", 1.0),
        ("1000000", "4243", None),  # meant for another process
        ("1000000", "pid", None),
        ("0", None, None),
        ("-1000000", None, None),
        ("1e6", None, None),
    ],
)
def test_watchdog_period(usec: str | None, pid: str | None, period: float | None) -> None:
    assert parse_watchdog_period(usec, pid, own_pid=4242) == period


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


def received(sock: socket.socket) -> list[bytes]:
    """Return every datagram waiting on a non-blocking socket."""
    messages = []
    with suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(65536))
    return messages


def test_unset_variable_opens_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object) -> None:
        raise AssertionError("a socket was opened without NOTIFY_SOCKET")

    monkeypatch.setattr(socket, "socket", no_socket)
    with ServiceNotifier({"WATCHDOG_USEC": "1000000"}) as service:
        service.ready()
        service.status("connected")
    assert service.watchdog_period == 1.0


def test_messages_arrive_one_line_each(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
        service.ready()
        # Text from outside cannot add an assignment of its own.
        service.status("connection lost: evil\nREADY=1\x1b[2J")
    assert received(sock) == [b"READY=1", b"STATUS=connection lost: evil\\nREADY=1\\x1b[2J", b"STOPPING=1"]


@LINUX_ONLY
def test_abstract_socket_name() -> None:
    name = f"minechat-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        with ServiceNotifier({"NOTIFY_SOCKET": "@" + name}) as service:
            service.ready()
        assert received(sock) == [b"READY=1", b"STOPPING=1"]


@needs_af_unix
def test_missing_listener_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens that earlier tests taught the process-wide secret filter would be hidden in this text too.
    monkeypatch.setattr(chat_io.SECRETS, "secrets", set())
    caplog.set_level(logging.DEBUG, logger="chat_io")
    with ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}) as service:
        service.ready()
    assert "cannot notify the service manager" in caplog.text


def test_full_queue_never_blocks(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
        # Nobody reads: the receiving queue fills after a few datagrams, and sending goes on regardless.
        for number in range(1000):
            service.status(f"message {number}")
    assert 0 < len(received(sock)) < 1000


def test_no_af_unix_means_no_messages(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.delattr(socket, "AF_UNIX")  # as on Windows
    with ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
        service.ready()
    assert received(sock) == []


async def test_watchdog_task_only_when_asked(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    for environ in ({"NOTIFY_SOCKET": path}, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000", "WATCHDOG_PID": "1"}):
        with ServiceNotifier(environ, pid=2) as service:
            before = asyncio.all_tasks()
            async with service.watchdog():
                assert asyncio.all_tasks() == before
    assert received(sock) == [b"STOPPING=1", b"STOPPING=1"]
    with ServiceNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}) as service:
        before = asyncio.all_tasks()
        async with service.watchdog():
            (pinger,) = asyncio.all_tasks() - before
            assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), WAIT) == b"WATCHDOG=1"
        assert pinger.done()
