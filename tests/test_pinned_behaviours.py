"""Behaviours an audit found unpinned (a planted bug survived): each test here fails when its behaviour breaks."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import STAMP, WAIT, FakeTime, RecordingDelays, RecordingOut, read_history, wait_for_file

import read_client
from _minechat.backlog import BACKLOG_BLOCK_BYTES, BACKLOG_TOTAL_CHARS, CUT_MARK, read_backlog
from _minechat.history import HISTORY_FORMATS, HistoryFile, HistoryPattern, lock_path_for
from _minechat.output import OUTPUT_LIMIT_CHARS, BackgroundWriter
from _minechat.stamping import StampClock
from chat_io import AlreadyRunning
from read_client import ReaderSettings

DEFAULT_FORMAT = "[%d.%m.%y %H:%M]"


def open_text_history(pattern: Path, now: FakeTime | None = None) -> tuple[HistoryFile, StampClock]:
    """Return an open text history for a pattern, and its clock."""
    history_pattern = HistoryPattern(pattern)
    clock = StampClock(expand_path=history_pattern.expand, now=now or FakeTime(datetime(2026, 11, 27).timestamp()))
    history = HistoryFile(history_pattern, HISTORY_FORMATS["text"], clock)
    history.open(clock.read().path)
    return history, clock


@pytest.mark.skipif(not hasattr(os, "fork"), reason="flock semantics")
def test_lock_file_with_a_longer_stale_pid_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    lock_path_for(path).write_text("98765432109876543210\n")  # left by an earlier run
    first, _ = open_text_history(path)
    try:
        with pytest.raises(AlreadyRunning) as caught:
            open_text_history(path)
    finally:
        first.close()
    assert f"(process {os.getpid()})" in str(caught.value)


def test_refused_midnight_switch_keeps_every_later_line_in_the_old_file(tmp_path: Path) -> None:
    day_one = datetime(2026, 11, 27, 23, 59, 30).timestamp()
    now = FakeTime(day_one)
    (tmp_path / "28.log").mkdir()  # the new day's file cannot be had
    history, clock = open_text_history(tmp_path / "%d.log", now)
    try:
        history.write([(clock.read().path, "Bob: one\n")])
        now.value = day_one + 60
        for text in ("Bob: two\n", "Bob: three\n", "Bob: four\n"):
            history.write([(clock.read().path, text)])
    finally:
        history.close()
    lines = read_history(tmp_path / "27.log")
    assert [line for line in lines if not line.startswith("[")] == ["Bob: one", "Bob: two", "Bob: three", "Bob: four"]
    assert sum("*** cannot start" in line for line in lines) == 1


def test_cut_mark_on_a_long_line_that_starts_on_a_block_edge(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    short = b"[27.11.26 10:00] Eve: short\n"
    head = b"[27.11.26 10:00] Eve: "
    long = head + b"z" * (2 * BACKLOG_BLOCK_BYTES - len(head) - 1) + b"\n"  # starts two blocks from the end
    history.write_bytes(short + long)
    shown = read_backlog([history], 10, DEFAULT_FORMAT)
    assert shown[0] == short.decode().rstrip("\n")
    assert shown[1].startswith(head.decode() + "zzz")
    assert shown[1].endswith("z" + CUT_MARK)


def test_backlog_stays_within_its_total_bound(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    lines = [f"[27.11.26 10:00] Eve: {number:04d} " + "z" * 10_000 for number in range(1000)]
    history.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    shown = read_backlog([history], 1000, DEFAULT_FORMAT)
    assert sum(len(line) + 1 for line in shown) <= BACKLOG_TOTAL_CHARS
    assert len(shown) == BACKLOG_TOTAL_CHARS // (len(lines[0]) + 1)
    assert shown == lines[-len(shown) :]


def test_one_text_longer_than_the_stdout_queue_is_written_when_nothing_waits() -> None:
    written: list[str] = []
    done = threading.Event()
    text = "[27.11.26 10:00] Eve: hi\n" * (OUTPUT_LIMIT_CHARS // 10)  # a backlog of thousands of lines

    def write(chunk: str) -> None:
        written.append(chunk)
        if sum(map(len, written)) >= len(text):
            done.set()

    writer = BackgroundWriter(write, lambda count: f"{count} skipped\n", name="test-stdout")
    try:
        assert writer.put(text)
        assert done.wait(WAIT)
    finally:
        writer.close()
    assert "".join(written) == text


async def test_line_and_paragraph_separators_are_escaped(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    settings = ReaderSettings("127.0.0.1", server.read_port, path, WAIT, verbose=False)
    out = RecordingOut()
    task = asyncio.create_task(read_client.run(settings, out, RecordingDelays()))
    try:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast("Bob: a\u2028b\u2029c\n".encode())
        await wait_for_file(path, lambda data: b"Bob: a" in data)
        await out.wait_for(lambda text: "Bob: a" in text)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    expected = STAMP + re.escape("Bob: a\\u2028b\\u2029c")
    assert [line for line in read_history(path) if "Bob" in line] == [
        line for line in read_history(path) if re.fullmatch(expected, line)
    ]
    assert any(re.fullmatch(expected, line) for line in read_history(path))
    assert "\u2028" not in out.text and "\u2029" not in out.text
    assert any(re.fullmatch(expected, line) for line in out.text.split("\n"))
