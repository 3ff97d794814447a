"""The systemd watchdog: pings only while the history is written, a floor under the interval, STOPPING=1 first."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import POSIX_ONLY, STOP_WAIT, WAIT, Listener, RecordingDelays, RecordingOut

import read_client
from _minechat.history import HistoryFile
from _minechat.systemd import ServiceNotifier
from read_client import ReaderSettings

pytestmark = POSIX_ONLY

WATCHDOG_USEC = 300_000  # a ping every 0.1 s
PING_INTERVAL = WATCHDOG_USEC / 1_000_000 / 3
# A window several pings long in which none may come.
QUIET_WINDOW = PING_INTERVAL * 5


def pings_after(messages: Listener, moment: float) -> int:
    """Count the watchdog pings that arrived after a moment (time.monotonic)."""
    return sum(1 for when, text in messages.messages if text == "WATCHDOG=1" and when > moment)


@pytest.mark.slow
async def test_no_pings_while_a_history_write_hangs(
    server: FakeMinechatServer,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket[1])
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    hang = threading.Event()  # set: the next write hangs, as on a stuck NFS or USB disk
    entered = threading.Event()
    release = threading.Event()
    real_write = HistoryFile.write

    def write(self: HistoryFile, entries: Iterable[tuple[str, str]]) -> None:
        if hang.is_set():
            entered.set()
            release.wait(WAIT * 2)
        real_write(self, entries)

    monkeypatch.setattr(HistoryFile, "write", write)
    settings = ReaderSettings("127.0.0.1", server.read_port, tmp_path / "chat.log", WAIT, verbose=False)
    task = asyncio.create_task(read_client.run(settings, RecordingOut(), RecordingDelays()))
    try:
        await listener.wait_until(lambda texts: texts.count("WATCHDOG=1") >= 2)
        await server.wait_until(lambda: len(server.readers) == 1)
        hang.set()
        await server.broadcast(b"Bob: this line hangs the disk\n")
        assert await asyncio.to_thread(entered.wait, WAIT)
        loop = asyncio.get_running_loop()
        # One ping may already be on its way; after an interval none may come.
        settled = loop.time() + PING_INTERVAL * 1.5
        await asyncio.sleep(PING_INTERVAL * 1.5 + QUIET_WINDOW)
        assert pings_after(listener, settled) == 0
        # Ctrl-C still ends it, though the write never returns.
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
        assert done == {task}
    finally:
        release.set()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_watchdog_interval_has_a_floor(notify_socket: tuple[socket.socket, str], listener: Listener) -> None:
    with ServiceNotifier({"NOTIFY_SOCKET": notify_socket[1], "WATCHDOG_USEC": "1"}) as service:
        async with service.watchdog():
            await listener.wait_until(lambda texts: "WATCHDOG=1" in texts)
            await asyncio.sleep(QUIET_WINDOW)
    # A microsecond period must not spin a core: the pings stay a few per 0.1 s at most.
    assert listener.texts.count("WATCHDOG=1") <= QUIET_WINDOW / 0.05 + 2


async def test_stopping_is_said_when_stopping_begins(
    server: FakeMinechatServer,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    default_signal_handlers: None,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket[1])
    settings = ReaderSettings("127.0.0.1", server.read_port, tmp_path / "chat.log", WAIT, verbose=False)
    task = asyncio.create_task(read_client.run(settings, RecordingOut(), RecordingDelays()))
    await listener.wait_until(lambda texts: any(text.startswith("STATUS=connected") for text in texts))
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, WAIT) == 143
    texts = await listener.wait_until(lambda texts: "STOPPING=1" in texts)
    assert texts.count("STOPPING=1") == 1
    assert texts.index("STOPPING=1") < texts.index("STATUS=stopped by SIGTERM")
