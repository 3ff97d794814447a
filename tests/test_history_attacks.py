"""Attacks on the history features of issue 10 (backlog, dated files, time formats, JSON Lines).

Each test documents a defect found in review: it is marked xfail(strict=True), so it must fail
until the defect is fixed (then the mark comes off).
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, WAIT, FakeTime, RecordingDelays, RecordingOut, stop_with_signal, wait_for_file
from fake_server import FakeMinechatServer
from test_history import spawn_reader

import read_client
from _minechat.backlog import read_backlog
from _minechat.history import HistoryPattern
from read_client import ReaderSettings

DEFAULT_FORMAT = "[%d.%m.%y %H:%M]"
ISO = "2026-11-27T10:00:00+00:00"


# --- the backlog -------------------------------------------------------------------------


@POSIX_ONLY
async def test_backlog_of_a_deeply_nested_json_line_does_not_crash_the_reader(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    history = tmp_path / "chat.log"
    history.write_bytes(b"[27.11.26 10:00] Eve: hi\n" + b'{"a": ' + b"[" * 5000 + b"\n")
    process = await spawn_reader(server.read_port, "--log_path", str(history), cwd=tmp_path, zone="UTC0")
    connected = asyncio.ensure_future(server.wait_until(lambda: len(server.readers) == 1, timeout=15))
    ended = asyncio.ensure_future(process.wait())
    try:
        await asyncio.wait({connected, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connected.cancel()
        with suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await connected
        if process.returncode is None:
            await stop_with_signal(process, signal.SIGTERM)
        ended.cancel()
    err = (await process.stderr.read()).decode(errors="replace")
    assert "Traceback" not in err
    assert process.returncode == 143, err


def test_backlog_reads_an_earlier_file_once_whatever_path_finds_it(tmp_path: Path) -> None:
    for year in ("2025", "2026"):
        (tmp_path / "logs" / year).mkdir(parents=True)
    (tmp_path / "logs" / "chat-27.log").write_text("[27.11.26 10:00] Eve: yesterday\n", encoding="utf-8")
    pattern = HistoryPattern(tmp_path / "logs" / "%Y" / ".." / "chat-%d.log")
    current = Path(pattern.expand(datetime(2026, 11, 28, 12, 0)))
    current.write_text("", encoding="utf-8")
    earlier = pattern.earlier_files(current)
    assert read_backlog([current, *earlier], 10, DEFAULT_FORMAT) == ["[27.11.26 10:00] Eve: yesterday"]


def test_a_log_path_with_x_either_is_refused_or_its_earlier_days_are_found(tmp_path: Path) -> None:
    try:
        settings = read_client.parse_settings(["--log_path", "chat-%x.log"], {}, tmp_path)
    except SystemExit:
        return  # refused as a usage error: fine
    pattern = HistoryPattern(settings.log_path)
    files = [Path(pattern.expand(datetime(2026, 11, day, 12, 0))) for day in (27, 28)]
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("[27.11.26 10:00] Eve: hi\n", encoding="utf-8")
    assert pattern.earlier_files(files[1]) == [files[0]]


# --- JSON Lines --------------------------------------------------------------------------


# --- time formats ----------------------------------------------------------------------


def test_a_time_format_with_a_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], {"TIME_FORMAT": "%H:%M\x00 %d.%m.%y"}, tmp_path)
    assert stop.value.code == 2


# --- midnight --------------------------------------------------------------------------


async def test_lines_that_cross_midnight_into_an_unusable_file_are_not_lost(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    midnight = datetime(2026, 2, 1).timestamp()
    now = FakeTime(midnight - 1.5)
    (tmp_path / "01.log").mkdir()  # the new day's path is taken by a folder
    settings = ReaderSettings(
        "127.0.0.1", server.read_port, tmp_path / "%d.log", WAIT, False, time_format="%d %H:%M:%S", backlog=0
    )
    out = RecordingOut()
    task = asyncio.create_task(read_client.run(settings, out, RecordingDelays(), now))
    try:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"A: before\n")
        await out.wait_for_lines(1)
        now.value = midnight + 0.5
        await server.broadcast(b"A: after midnight\n")
        # The history goes on in the old file, saying why; the reader goes on too.
        old_file = tmp_path / "31.log"
        await wait_for_file(old_file, lambda data: b"A: after midnight" in data)
        assert not task.done()
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    old = old_file.read_text(encoding="utf-8")
    assert f"*** cannot start {tmp_path / '01.log'}: " in old
    assert "history continues in" not in old
    assert old.index("*** cannot start") < old.index("A: after midnight")
