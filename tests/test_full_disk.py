"""read_client on a full disk: a pause, not the end; nothing received is cut, lost or doubled."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import STAMP, STOP_WAIT, WAIT, FakeTime, RecordingDelays, RecordingOut, read_history, wait_for_file

import read_client
from _minechat.history import HISTORY_FORMATS, DiskFull, HistoryFile, HistoryPattern
from _minechat.stamping import StampClock
from read_client import ReaderSettings

FULL_NOTE = "the disk is full"
LOG_POLL_SECONDS = 0.01


def fill_disk(folder: Path) -> Path:
    """Fill a file system with one file until not a byte more fits; return that file."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with suppress(OSError):
            while os.write(descriptor, b"\0" * 512):
                pass
    finally:
        os.close(descriptor)
    return filler


async def wait_for_log(caplog: pytest.LogCaptureFixture, predicate: Callable[[str], bool]) -> None:
    """Wait until a logged message satisfies predicate."""

    async def wait() -> None:
        while not any(predicate(record.getMessage()) for record in caplog.records):
            await asyncio.sleep(LOG_POLL_SECONDS)

    await asyncio.wait_for(wait(), WAIT)


def numbered(first: int, count: int) -> bytes:
    """Return chat lines carrying their numbers, so gaps and doubles show."""
    return "".join(f"Bob: {number:05d} погода сегодня хороша\n" for number in range(first, first + count)).encode()


@asynccontextmanager
async def reading(
    server: FakeMinechatServer, path: Path, idle_timeout: float = 0.3
) -> AsyncIterator[asyncio.Task[int]]:
    """Run a reader in-process into path; cancel it at the end."""
    settings = ReaderSettings("127.0.0.1", server.read_port, path, WAIT, verbose=False, idle_timeout=idle_timeout)
    task = asyncio.create_task(read_client.run(settings, RecordingOut(), RecordingDelays()))
    try:
        yield task
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def received_statuses(listener: socket.socket) -> list[str]:
    """Return the STATUS= values the service manager's socket got so far."""
    statuses = []
    with suppress(BlockingIOError):
        while True:
            for line in listener.recv(4096).decode().splitlines():
                if line.startswith("STATUS="):
                    statuses.append(line.removeprefix("STATUS="))
    return statuses


@pytest.mark.slow
async def test_full_disk_pauses_and_carries_on_where_the_write_stopped(
    server: FakeMinechatServer, tiny_disk: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(f"\0minechat-full-disk-{os.getpid()}")
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", f"@minechat-full-disk-{os.getpid()}")
    path = tiny_disk / "chat.log"
    count = 400  # about 18 KB: more than a full disk takes
    async with reading(server, path) as task:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, 1))
        await wait_for_file(path, lambda data: b"Bob: 00001" in data)
        filler = fill_disk(tiny_disk)
        await server.broadcast(numbered(2, count - 1))
        await wait_for_log(caplog, lambda message: FULL_NOTE in message)
        # Paused by us, the connection is not silent: no reconnect however long the disk stays full.
        with suppress(asyncio.TimeoutError):
            await server.wait_until(lambda: server.reader_connections > 1, timeout=1.0)
        assert server.reader_connections == 1
        assert not task.done()
        filler.unlink()
        await wait_for_file(path, lambda data: b"disk was full from" in data)
        await server.broadcast(numbered(count + 1, 1))
        await wait_for_file(path, lambda data: f"Bob: {count + 1:05d}".encode() in data)
    history = read_history(path)
    numbers = [
        int(match[1])
        for line in history
        if (match := re.fullmatch(STAMP + r"Bob: (\d{5}) погода сегодня хороша", line))
    ]
    assert numbers == list(range(1, count + 2))
    for line in history:
        assert re.fullmatch(STAMP + r"(Bob: \d{5} погода сегодня хороша|\*\*\* .*)", line), line
    assert sum("disk was full from" in line for line in history) == 1
    assert sum(FULL_NOTE in record.getMessage() for record in caplog.records) == 1  # said once
    statuses = received_statuses(listener)
    listener.close()
    assert sum(status.startswith(FULL_NOTE) for status in statuses) == 1
    assert any(status.startswith("disk was full from") for status in statuses)


def make_history(pattern: Path, clock: StampClock) -> HistoryFile:
    """Return a text history for a pattern, not yet open."""
    return HistoryFile(HistoryPattern(pattern), HISTORY_FORMATS["text"], clock)


def test_write_on_a_full_disk_keeps_the_rest_and_writes_it_later(tiny_disk: Path) -> None:
    path = tiny_disk / "chat.log"
    history = make_history(path, StampClock())
    history.open(str(path))
    filler = fill_disk(tiny_disk)
    text = "".join(f"line {number} ещё\n" for number in range(2000))  # far more than a page, less than the disk
    try:
        with pytest.raises(DiskFull) as caught:
            history.write([(str(path), text[:20_000]), (str(path), text[20_000:])])
        with pytest.raises(DiskFull) as again:
            history.write(caught.value.unwritten)
        filler.unlink()
        history.write(again.value.unwritten)
    finally:
        history.close()
    assert path.read_text(encoding="utf-8") == text


def test_new_day_file_whose_first_write_fails_leaves_the_history_in_the_old_one(
    tmp_path: Path, tiny_disk: Path
) -> None:
    day_one = datetime(2026, 11, 27, 23, 59, 30).timestamp()
    now = FakeTime(day_one)
    pattern = tmp_path / "%d.log"
    clock = StampClock(expand_path=HistoryPattern(pattern).expand, now=now)
    fill_disk(tiny_disk)
    # The new day's name leads to the full disk; the old day's file has room.
    (tmp_path / "28.log").symlink_to(tiny_disk / "28.log")
    history = make_history(pattern, clock)
    history.open(clock.read().path)
    try:
        history.write([(clock.read().path, "Bob: before midnight\n")])
        now.value = day_one + 60
        history.write([(clock.read().path, "Bob: after midnight\n"), (clock.read().path, "Bob: later\n")])
    finally:
        history.close()
    lines = read_history(tmp_path / "27.log")
    assert lines[0] == "Bob: before midnight"
    assert re.fullmatch(
        STAMP + re.escape(f"*** cannot start {tmp_path / '28.log'}: No space left on device; the history goes on here"),
        lines[1],
    )
    assert lines[2:] == ["Bob: after midnight", "Bob: later"]
    assert (tiny_disk / "28.log").read_bytes() == b""


@pytest.mark.slow
async def test_stop_while_the_disk_is_full_ends_in_time(
    server: FakeMinechatServer, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = tiny_disk / "chat.log"
    async with reading(server, path) as task:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, 1))
        await wait_for_file(path, lambda data: b"Bob: 00001" in data)
        fill_disk(tiny_disk)
        await server.broadcast(numbered(2, 400))
        await wait_for_log(caplog, lambda message: FULL_NOTE in message)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
        assert done == {task}
    assert any("not written" in record.getMessage() for record in caplog.records)
