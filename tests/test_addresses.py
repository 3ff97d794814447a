"""Connecting to a host name: every address is tried (Happy Eyeballs), and a lookup that hangs never holds a stop."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    ROOT,
    STOP_WAIT,
    WAIT,
    RecordingDelays,
    RecordingOut,
    client_process_sync,
    run_sender,
    texts_of,
)

import chat_io
import read_client
import send_client
from read_client import ReaderSettings

LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
# A host name the stub resolver below answers for; nothing else ever resolves it.
HOST = "chat.example"
# A connect timeout far longer than the RFC 8305 delay (0.25 s) before the next address is tried: a dead
# first address costs about that delay, never the timeout. Half the timeout tells the two apart, with room
# for a busy machine.
DEAD_ADDRESS_TIMEOUT = 20.0
HAPPY_EYEBALLS_BOUND = DEAD_ADDRESS_TIMEOUT / 2


@contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """An address that drops connection attempts: a listener that never accepts, its backlog full."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            yield "127.0.0.1", port
        finally:
            for filler in fillers:
                filler.close()


def resolve_to(monkeypatch: pytest.MonkeyPatch, first: tuple[str, int]) -> None:
    """Make HOST resolve to first (an address with a port of its own), then to 127.0.0.1; other names as before."""
    real = socket.getaddrinfo

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list[object]:
        if host != HOST:
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        addresses = [first, ("127.0.0.1", int(port))]  # type: ignore[call-overload]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address) for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@LINUX_ONLY
async def test_reader_connects_past_a_dead_first_address(
    server: FakeMinechatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with black_hole() as dead:
        resolve_to(monkeypatch, dead)
        settings = ReaderSettings(
            HOST, server.read_port, tmp_path / "chat.log", DEAD_ADDRESS_TIMEOUT, verbose=False, backlog=0
        )
        started = time.monotonic()
        task = asyncio.ensure_future(read_client.run(settings, RecordingOut(), RecordingDelays()))
        try:
            await server.wait_until(lambda: bool(server.readers), timeout=DEAD_ADDRESS_TIMEOUT)
            took = time.monotonic() - started
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert took < HAPPY_EYEBALLS_BOUND, took


@LINUX_ONLY
async def test_sender_connects_past_a_dead_first_address(
    server: FakeMinechatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with black_hole() as dead:
        resolve_to(monkeypatch, dead)
        argv = [
            "--host",
            HOST,
            "--port",
            str(server.write_port),
            "--read-port",
            str(server.read_port),
            "--token",
            server.add_account("Eve"),
        ]
        argv += ["--connect-timeout", str(DEAD_ADDRESS_TIMEOUT)]  # the chat witness too connects past the dead address
        settings = send_client.parse_settings([*argv, "--message", "hi"], {}, tmp_path)
        started = time.monotonic()
        await run_sender(settings)
    assert time.monotonic() - started < HAPPY_EYEBALLS_BOUND
    assert texts_of(server) == ["hi"]


async def test_open_connection_tries_the_next_address_at_once_when_one_refuses(
    server: FakeMinechatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # bound, never listening: refuses
        resolve_to(monkeypatch, refusing.getsockname())
        # The delay made as long as the timeout: waiting it out instead of going on at the refusal shows as
        # seconds, which a busy machine never adds to a refusal on 127.0.0.1 (the real delay, 0.25 s, it may).
        monkeypatch.setattr(chat_io, "HAPPY_EYEBALLS_DELAY", DEAD_ADDRESS_TIMEOUT)
        started = time.monotonic()
        async with chat_io.open_connection(HOST, server.read_port, DEAD_ADDRESS_TIMEOUT):
            took = time.monotonic() - started
    assert took < HAPPY_EYEBALLS_BOUND, took  # not the Happy Eyeballs delay: a refusal is an answer


# A child whose every name lookup hangs, as with a resolver that never answers; it says so on stderr first.
LOOKUP_HANGS = "test: the lookup hangs"
HANGING_LOOKUP = """
import socket, sys, threading
sys.path.insert(0, {root!r})
real = socket.getaddrinfo
def getaddrinfo(*args, flags=0, **kwargs):
    if flags & socket.AI_NUMERICHOST:  # only asks whether it is an address: answered at once
        return real(*args, flags=flags, **kwargs)
    sys.stderr.write({hanging!r} + "\\n")  # the test signals once it reads this
    sys.stderr.flush()
    threading.Event().wait()
socket.getaddrinfo = getaddrinfo
import chat_io
import read_client
sys.exit(read_client.main(sys.argv[2:]))  # after the script's path, which client_command puts first
"""


@POSIX_ONLY
def test_ctrl_c_while_a_lookup_hangs_ends_the_reader(tmp_path: Path) -> None:
    # A lookup that hangs for ever in a thread the exit waited for kept the reader running for ever: STOP_WAIT
    # (a bound a busy machine keeps, not the promise of a second) tells the two apart.
    with client_process_sync(
        "read_client.py",
        "--host",
        HOST,
        "--backlog",
        "0",
        cwd=tmp_path,
        python=("-c", HANGING_LOOKUP.format(root=str(ROOT), hanging=LOOKUP_HANGS)),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    ) as process:
        assert process.stderr is not None
        # The reader says it is connecting, and the lookup has begun (in either order): it waits on that now.
        lines: list[bytes] = []
        while not (
            any(b"connecting to" in line for line in lines) and any(LOOKUP_HANGS.encode() in line for line in lines)
        ):
            lines.append(process.stderr.readline())
            assert lines[-1], lines  # the reader ended instead
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=STOP_WAIT)
        err = process.stderr.read().decode(errors="replace")
    assert code == 128 + signal.SIGINT, err
    assert "Traceback" not in err


# A connect's loop steps from the winning address's accept to open_connection's return, with room to spare.
STEPS_AFTER_A_WIN = 12


@LINUX_ONLY
async def test_a_cancel_as_an_address_wins_closes_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # staggered_race drops the winner's socket when it is cancelled while the losers are still being
    # cancelled: nobody closes it, and the server is left with a connection nobody will ever use.
    monkeypatch.setattr(chat_io, "HAPPY_EYEBALLS_DELAY", 0.01)
    loop = asyncio.get_running_loop()
    left_open = []
    gc.disable()  # a socket nobody closed would be closed by the collector, with a ResourceWarning
    try:
        with black_hole() as dead:
            resolve_to(monkeypatch, dead)
            for steps in range(STEPS_AFTER_A_WIN):
                with socket.create_server(("127.0.0.1", 0)) as listener:
                    listener.setblocking(False)
                    task = asyncio.ensure_future(open_and_wait(listener.getsockname()[1]))
                    accepted, _ = await asyncio.wait_for(loop.sock_accept(listener), WAIT)
                    with accepted:
                        for _ in range(steps):
                            await asyncio.sleep(0)
                        task.cancel()
                        await asyncio.wait({task}, timeout=WAIT)
                        assert task.cancelled()
                        try:
                            await asyncio.wait_for(loop.sock_recv(accepted, 1), WAIT)
                        except asyncio.TimeoutError:
                            left_open.append(steps)  # the first is enough: each costs WAIT
                if left_open:
                    break
    finally:
        task = None  # a cancelled task keeps its traceback, and through it the socket left open
        with warnings.catch_warnings():  # closed here, not with a warning in some later test
            warnings.simplefilter("ignore", ResourceWarning)
            gc.enable()
            gc.collect()
    assert left_open == []


async def open_and_wait(port: int) -> None:
    """Connect to HOST, which resolves to a dead address first, and wait to read."""
    async with chat_io.open_connection(HOST, port, DEAD_ADDRESS_TIMEOUT) as (reader, _):
        await reader.read(1)
