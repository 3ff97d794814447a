"""Connections: keepalive options, the receiver's flow control, timeouts, and how failures are described."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import fake_server
import pytest
from fake_server import FakeMinechatServer
from helpers import (
    LINUX_ONLY,
    TOKEN,
    WAIT,
    RecordingDelays,
    RecordingOut,
    free_port,
    read_history,
    run_sender,
    status_of,
)

import _minechat.receiver
import chat_io
import read_client
import send_client
from _minechat.receiver import open_receiver
from chat_io import (
    ConnectionFailed,
    FileError,
    ProtocolError,
    describe_error,
    format_address,
    is_retryable,
    open_connection,
)
from read_client import ReaderSettings


def assert_keepalive(sock: socket.socket) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == chat_io.KEEPALIVE_IDLE_SECONDS == 60
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == chat_io.KEEPALIVE_INTERVAL_SECONDS == 10
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == chat_io.KEEPALIVE_COUNT == 5


class Sink:
    def __init__(self) -> None:
        self.connection: _minechat.receiver.ReceivingConnection | None = None

    def connected(self, connection: _minechat.receiver.ReceivingConnection) -> None:
        self.connection = connection

    def received(self, data: bytes) -> None:
        pass


class FakeSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def setsockopt(self, *args: object) -> None:
        self.calls.append(("setsockopt", *args))

    def ioctl(self, *args: object) -> None:
        self.calls.append(("ioctl", *args))


class PausableTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_describe_error_names_dns_failures() -> None:
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == "Name or service not known"
    assert describe_error(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")) == os.strerror(111)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (asyncio.TimeoutError(), True),
        (asyncio.IncompleteReadError(b"", 1), True),
        (ConnectionFailed("gone"), True),
        (FileError("disk full"), False),
        (ProtocolError("odd"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable(error: BaseException, retry: bool) -> None:
    assert is_retryable(error) is retry


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("minechat.dvmn.org", 5000, "minechat.dvmn.org:5000"),
        ("127.0.0.1", 1, "127.0.0.1:1"),
        ("::1", 5000, "[::1]:5000"),
    ],
)
def test_format_address(host: str, port: int, address: str) -> None:
    assert format_address(host, port) == address


async def test_connection_has_keepalive_and_closes(server: fake_server.FakeMinechatServer) -> None:
    async with open_connection("127.0.0.1", server.read_port) as (_, writer):
        sock = writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert writer.is_closing()


@LINUX_ONLY
async def test_posting_connection_sets_keepalive_idle_interval_and_count(server: FakeMinechatServer) -> None:
    async with open_connection("127.0.0.1", server.write_port) as (_, writer):
        assert_keepalive(writer.get_extra_info("socket"))


@LINUX_ONLY
async def test_reading_connection_sets_keepalive_idle_interval_and_count(server: FakeMinechatServer) -> None:
    sink = Sink()
    async with open_receiver("127.0.0.1", server.read_port, sink) as connection:
        assert sink.connection is connection
        assert_keepalive(connection._transport.get_extra_info("socket"))  # type: ignore[union-attr]


def test_keepalive_on_no_socket_is_nothing() -> None:
    chat_io.enable_keepalive(None)


def test_port_65535_reaches_the_connection(tmp_path: Path) -> None:
    import read_client

    settings = read_client.parse_settings(["--port", "65535"], {}, tmp_path)
    assert settings.port == 65535


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (TimeoutError(), "timed out"),
        (OSError(None, "odd failure"), "odd failure"),
        (ValueError("bad value"), "bad value"),
        (ValueError(), "ValueError"),
        (chat_io.FileError("disk full"), "disk full"),
    ],
)
def test_describe_error(error: BaseException, text: str) -> None:
    assert chat_io.describe_error(error) == text


def test_keepalive_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "SIO_KEEPALIVE_VALS", 98, raising=False)
    sock = FakeSocket()
    chat_io.enable_keepalive(sock)  # type: ignore[arg-type]
    assert sock.calls == [
        ("setsockopt", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ("ioctl", 98, (1, 60_000, 10_000)),
    ]


def test_keepalive_on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "SIO_KEEPALIVE_VALS"):
        monkeypatch.delattr(socket, name, raising=False)
    monkeypatch.setattr(socket, "TCP_KEEPALIVE", 16, raising=False)
    sock = FakeSocket()
    chat_io.enable_keepalive(sock)  # type: ignore[arg-type]
    assert sock.calls == [
        ("setsockopt", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ("setsockopt", socket.IPPROTO_TCP, 16, 60),
    ]


def test_keepalive_failure_is_ignored() -> None:
    class Refusing(FakeSocket):
        def setsockopt(self, *args: object) -> None:
            raise OSError(92, "Protocol not available")

    chat_io.enable_keepalive(Refusing())  # type: ignore[arg-type]


async def test_receiving_connection_pauses_and_resumes_only_while_open() -> None:
    sink = Sink()
    connection = _minechat.receiver.ReceivingConnection(sink)
    connection.pause(True)  # not connected yet: nothing to pause
    transport = PausableTransport()
    connection.connection_made(transport)
    assert sink.connection is connection
    connection.pause(True)
    connection.pause(False)
    transport.closing = True
    connection.pause(True)
    assert transport.calls == ["pause", "resume"]


async def test_leaving_the_receiver_closes_the_connection(server: FakeMinechatServer) -> None:
    async with open_receiver("127.0.0.1", server.read_port, Sink()):
        await server.wait_until(lambda: len(server.readers) == 1)
    await server.wait_until(lambda: not server.readers)


def test_keepalive_without_any_idle_option(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TCP_KEEPIDLE", "TCP_KEEPALIVE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "SIO_KEEPALIVE_VALS"):
        monkeypatch.delattr(socket, name, raising=False)
    sock = FakeSocket()
    chat_io.enable_keepalive(sock)  # type: ignore[arg-type]
    assert sock.calls == [("setsockopt", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_connecting_has_the_configured_timeout(tmp_path: Path, unanswered_port: int) -> None:
    port = unanswered_port
    settings = ReaderSettings("127.0.0.1", port, tmp_path / "chat.log", 0.3, verbose=False)
    delays = RecordingDelays()
    task = asyncio.ensure_future(read_client.run(settings, RecordingOut(), delays))
    try:
        await delays.wait_for_taken(1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    notes = status_of(read_history(tmp_path / "chat.log"))
    assert notes[1] == (
        f"*** no answer from 127.0.0.1:{port} within 0.3 s; check the address or raise --connect-timeout; "
        "next try in 0.0 s"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_connecting_has_a_timeout(tmp_path: Path, unanswered_port: int) -> None:
    # A listener that never accepts, with its backlog filled, leaves further connects hanging.
    port = unanswered_port
    settings = send_client.parse_settings(
        ["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--connect-timeout", "0.3"], {}, tmp_path
    )
    with pytest.raises(ConnectionFailed, match=r"no answer from 127\.0\.0\.1:\d+ within 0\.3 s"):
        await run_sender(settings)


async def test_refused_connection_is_a_connection_failure(tmp_path: Path) -> None:
    port = free_port()
    settings = send_client.parse_settings(["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN], {}, tmp_path)
    with pytest.raises(ConnectionFailed, match=f"cannot connect to 127.0.0.1:{port}: Connection refused"):
        await run_sender(settings)


LOOP_STEPS_THROUGH_A_CONNECT = 12  # a loopback connect completes within about 8 steps of the loop


async def open_and_wait(listener: socket.socket, receiver: bool) -> None:
    """Open a connection to a listener that never speaks, and wait to read from it."""
    port = listener.getsockname()[1]
    if receiver:
        async with open_receiver("127.0.0.1", port, Sink()) as connection:
            await connection.wait_ended()
    else:
        async with open_connection("127.0.0.1", port, chat_io.DEFAULT_CONNECT_TIMEOUT) as (reader, _):
            await reader.read(1)


@pytest.mark.parametrize("receiver", [False, True], ids=["posting", "reading"])
async def test_a_cancel_at_any_step_of_a_connect_ends_it(receiver: bool) -> None:
    # asyncio.wait_for before Python 3.12 lost a cancel that landed as the connect completed, and the
    # connection went on: here it would wait for the silent listener until the test's bound.
    lost = []
    for steps in range(LOOP_STEPS_THROUGH_A_CONNECT):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            task = asyncio.ensure_future(open_and_wait(listener, receiver))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=WAIT)
            if not done:
                lost.append(steps)
                task.cancel()
                await asyncio.wait({task})
            assert task.cancelled()
    assert lost == []


CANCEL_AT_EXPIRY_TIMEOUT = 0.5  # long enough for the task's first steps on a busy machine, short enough to wait out


async def cancel_once_its_deadline_has_passed(task: asyncio.Future[object]) -> None:
    """Cancel task once, in the same step of the loop as its deadline expires: the loop is held past it first."""
    for _ in range(3):
        await asyncio.sleep(0)  # into the timed wait, with its timer set
    assert not task.done()
    time.sleep(CANCEL_AT_EXPIRY_TIMEOUT * 2)  # holds the loop past the deadline
    # The cancel runs in the next step of the loop, just before the timer that has come due: as a stop
    # does when it cancels in the moment the deadline passes.
    asyncio.get_running_loop().call_soon(task.cancel)
    done, _ = await asyncio.wait({task}, timeout=WAIT)
    assert done


async def test_a_cancel_as_within_times_out_is_not_taken_for_the_timeout() -> None:
    # On 3.10 within's own deadline cannot tell a cancel from outside in the same moment: it raises
    # asyncio.TimeoutError and the cancel is gone, unless someone sends it again.
    task = asyncio.ensure_future(chat_io.within(CANCEL_AT_EXPIRY_TIMEOUT, asyncio.Event().wait()))
    await cancel_once_its_deadline_has_passed(task)
    assert task.cancelled()


@pytest.mark.parametrize("receiver", [False, True], ids=["posting", "reading"])
async def test_a_cancel_as_the_connect_times_out_ends_it_cancelled(receiver: bool, unanswered_port: int) -> None:
    # Not "no answer from 127.0.0.1:PORT within 0.5 s": the reader would log it and wait to reconnect.
    async def connect() -> None:
        if receiver:
            async with open_receiver("127.0.0.1", unanswered_port, Sink(), CANCEL_AT_EXPIRY_TIMEOUT):
                pass
        else:
            async with open_connection("127.0.0.1", unanswered_port, CANCEL_AT_EXPIRY_TIMEOUT):
                pass

    task = asyncio.ensure_future(connect())
    await cancel_once_its_deadline_has_passed(task)
    assert task.cancelled(), task.exception()
