"""read_client on a full disk: a pause, not the end; nothing received is cut, lost or doubled."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    STAMP,
    STOP_WAIT,
    FakeTime,
    chat_of,
    fill_disk,
    make_history,
    numbered,
    numbers_of,
    read_history,
    running_reader,
    wait_for_file,
    wait_for_log,
)

from _minechat.history import DiskFull, HistoryPattern
from _minechat.stamping import StampClock

FULL_NOTE = "the disk is full"
# Readers here take a connection silent this long for dead.
FULL_DISK_IDLE = 0.3


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
    async with running_reader(server, path, idle_timeout=FULL_DISK_IDLE) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, 1))
        await wait_for_file(path, lambda data: b"Bob: 0000001 " in data)
        filler = fill_disk(tiny_disk)
        await server.broadcast(numbered(2, count - 1))
        await wait_for_log(caplog, lambda message: FULL_NOTE in message)
        # Paused by us, the connection is not silent: no reconnect however long the disk stays full.
        with suppress(asyncio.TimeoutError):
            await server.wait_until(lambda: server.reader_connections > 1, timeout=1.0)
        assert server.reader_connections == 1
        assert not reader.task.done()
        filler.unlink()
        await wait_for_file(path, lambda data: b"disk was full from" in data)
        await server.broadcast(numbered(count + 1, 1))
        await wait_for_file(path, lambda data: f"Bob: {count + 1:07d} ".encode() in data)
    history = read_history(path)
    assert numbers_of(chat_of(history)) == list(range(1, count + 2))
    for line in history:
        assert re.fullmatch(STAMP + r"(Bob: \d{7} ну и погода сегодня|\*\*\* .*)", line), line
    assert sum("disk was full from" in line for line in history) == 1
    assert sum(FULL_NOTE in record.getMessage() for record in caplog.records) == 1  # said once
    statuses = received_statuses(listener)
    listener.close()
    assert sum(status.startswith(FULL_NOTE) for status in statuses) == 1
    assert any(status.startswith("disk was full from") for status in statuses)


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
    async with running_reader(server, path, idle_timeout=FULL_DISK_IDLE) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, 1))
        await wait_for_file(path, lambda data: b"Bob: 0000001 " in data)
        fill_disk(tiny_disk)
        await server.broadcast(numbered(2, 400))
        await wait_for_log(caplog, lambda message: FULL_NOTE in message)
        reader.task.cancel()
        done, _ = await asyncio.wait({reader.task}, timeout=STOP_WAIT)
        assert done == {reader.task}
    assert any("not written" in record.getMessage() for record in caplog.records)
