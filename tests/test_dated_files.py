"""Dated history files: LOG_PATH patterns, midnight while running, earlier days and their lock."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    WAIT,
    FakeTime,
    RecordingDelays,
    RecordingOut,
    StartReader,
    chat_of,
    client_env,
    open_text_history,
    read_history,
    reader_process,
    status_of,
    stop,
    stop_with_signal,
    wait_for_file,
)

import read_client
from _minechat.history import HistoryPattern
from chat_io import AlreadyRunning
from read_client import ReaderSettings


def chat_of_stamped(lines: list[str]) -> list[str]:
    """Return the chat of lines stamped "%d %H:%M:%S"."""
    texts = [line.split(" ", 2)[2] for line in lines]
    return [text for text in texts if not text.startswith("*** ")]


MIDNIGHT_AHEAD = 3.0


def zone_with_midnight_in(seconds: float) -> str:
    """Return a POSIX TZ rule whose local midnight is about seconds from now (no zone database needed)."""
    offset = round(86_400 - seconds - time.time() % 86_400) % 86_400
    hours, rest = divmod(offset, 3600)
    minutes, secs = divmod(rest, 60)
    return f"XYZ-{hours:02d}:{minutes:02d}:{secs:02d}"  # POSIX: the sign is west of Greenwich


def test_pattern_expands_in_local_time_with_a_literal_percent(tmp_path: Path) -> None:
    pattern = HistoryPattern(tmp_path / "100%%" / "%Y" / "%m-%d.log")
    assert pattern.dated
    assert pattern.expand(datetime(2026, 2, 3, 23, 59)) == str(tmp_path / "100%" / "2026" / "02-03.log")
    plain = HistoryPattern(tmp_path / "50%%.log")
    assert not plain.dated
    assert plain.expand(datetime(2026, 2, 3)) == str(tmp_path / "50%.log")


def test_one_lock_for_the_pattern_whatever_its_spelling(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    one = HistoryPattern(tmp_path / "logs" / "%Y" / "%d.log")
    other = HistoryPattern(tmp_path / "sub" / ".." / "logs" / "%Y" / "%d.log")
    (tmp_path / "logs").mkdir()
    assert one.lock_path() == other.lock_path()
    assert one.lock_path() == tmp_path / "logs" / ".%Y%_%d.log.read_client.lock"
    assert one.lock_path() != HistoryPattern(tmp_path / "logs" / "%Y%d.log").lock_path()


def test_earlier_files_are_those_the_pattern_makes_newest_first(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    pattern = HistoryPattern(folder / "chat-%Y-%m-%d.log")
    names = ["chat-2026-01-01.log", "chat-2026-01-03.log", "chat-2026-01-02.log"]
    for age, name in enumerate(names):
        (folder / name).write_text("x\n")
        os.utime(folder / name, (1_700_000_000 + age * 10, 1_700_000_000 + age * 10))
    for stranger in ("chat-notes-here.log", "chat-2026-01-04.log.lock", ".env"):
        (folder / stranger).write_text("secret\n")
    (folder / "chat-2026-01-05.log").mkdir()  # not a file
    current = folder / "chat-2026-01-03.log"
    assert pattern.earlier_files(current) == [folder / "chat-2026-01-02.log", folder / "chat-2026-01-01.log"]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("50%.log", "%. is no date or time field; a literal % is written %%"),
        ("chat-%f.log", "%f is no date or time field"),
        ("chat%", "lone %"),
    ],
)
def test_bad_log_path_patterns_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, complaint: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings(["--log_path", value], {}, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert len(err.splitlines()) == 1


def test_a_folder_with_percent_in_its_name_is_taken_literally(tmp_path: Path) -> None:
    folder = tmp_path / "100%"
    folder.mkdir()
    settings = read_client.parse_settings([], {}, folder)
    assert HistoryPattern(settings.log_path).expand(datetime.now()) == str(folder / "chat_logs.txt")


async def test_midnight_in_process_keeps_an_open_line_in_its_day(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    midnight = datetime(2026, 2, 1).timestamp()
    now = FakeTime(midnight - 1.5)
    pattern = tmp_path / "logs" / "%Y-%m" / "%d %%.log"
    reader = await start_reader(log_path=pattern, now=now, time_format="%d %H:%M:%S", backlog=0)
    await server.wait_until(lambda: len(server.readers) == 1)
    old_file = tmp_path / "logs" / "2026-01" / "31 %.log"
    new_file = tmp_path / "logs" / "2026-02" / "01 %.log"
    long = b"Eve: " + b"z" * (3 * 64 * 1024)
    await server.broadcast(b"A: before\n" + long[: 2 * 64 * 1024])
    await wait_for_file(old_file, lambda data: b"zzzz" in data, WAIT)
    now.value = midnight + 0.5  # the long line is still coming in
    await server.broadcast(long[2 * 64 * 1024 :] + b"\nA: after\n")
    await wait_for_file(new_file, lambda data: b"A: after" in data, WAIT)
    await stop(reader)
    old = old_file.read_text(encoding="utf-8").splitlines()
    new = new_file.read_text(encoding="utf-8").splitlines()
    assert chat_of_stamped(old) == ["A: before", long.decode()]
    assert old[-1] == f"01 00:00:00 *** history continues in {new_file}"
    assert new[0] == f"01 00:00:00 *** history continues from {old_file}"
    assert chat_of_stamped(new) == ["A: after"]
    if sys.platform != "win32":
        assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
        assert stat.S_IMODE(new_file.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(new_file.stat().st_mode) == 0o600


async def test_dated_history_follows_rotation_and_is_locked(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    pattern = tmp_path / "logs" / "%Y" / "chat-%m-%d.log"
    reader = await start_reader(log_path=pattern)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"A: before\n")
    await reader.out.wait_for_lines(1)
    current = Path(HistoryPattern(pattern).expand(datetime.now()))
    current.rename(current.with_name("rotated.log"))
    await server.broadcast(b"A: after\n")
    await reader.out.wait_for_lines(2)
    fresh = current.read_text(encoding="utf-8").splitlines()
    assert chat_of(fresh) == ["A: after"]
    assert "was moved or deleted" in status_of(fresh)[0]
    # The same pattern by another name is refused: the lock is the pattern's.
    (tmp_path / "sub").mkdir()
    other_name = tmp_path / "sub" / ".." / "logs" / "%Y" / "chat-%m-%d.log"
    second = ReaderSettings("127.0.0.1", server.read_port, other_name, WAIT, False)
    with pytest.raises(AlreadyRunning):
        await read_client.run(second, RecordingOut(), RecordingDelays())
    # And today's file by its own name: the file itself is locked too.
    plain = ReaderSettings("127.0.0.1", server.read_port, current, WAIT, False)
    with pytest.raises(AlreadyRunning):
        await read_client.run(plain, RecordingOut(), RecordingDelays())


@pytest.mark.slow
@POSIX_ONLY
async def test_midnight_while_running_starts_the_next_file(server: FakeMinechatServer, tmp_path: Path) -> None:
    pattern = tmp_path / "logs" / "%Y" / "%m-%d.log"
    options = ("--time-format", "%Y %m-%d %H:%M:%S", "--backlog", "0")
    async with reader_process(
        server,
        pattern,
        *options,
        cwd=tmp_path,
        env=client_env(TZ=zone_with_midnight_in(MIDNIGHT_AHEAD)),
    ) as process:
        sent = 0
        days: list[str] = []
        try:
            # Lines in a steady stream, each sent once the one before is shown, until a few after midnight.
            after_midnight = 0
            deadline = time.monotonic() + MIDNIGHT_AHEAD + WAIT
            while after_midnight < 3 and time.monotonic() < deadline:
                await server.broadcast(f"Bob: {sent + 1:07d} tick\nBob: {sent + 2:07d} tock\n".encode())
                sent += 2
                for _ in range(2):
                    line = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode()
                    day = line[: len("2026 01-31")]
                    if day not in days:
                        days.append(day)
                after_midnight += len(days) > 1
            assert len(days) == 2, f"expected the lines of two days, got {days}: did the client start too late?"
        finally:
            code = await stop_with_signal(process, signal.SIGINT)
    assert code == -signal.SIGINT, (await process.stderr.read()).decode()
    files = {day: tmp_path / "logs" / day[:4] / f"{day[5:]}.log" for day in days}
    old, new = (files[day].read_text(encoding="utf-8").splitlines() for day in days)
    assert old[-1].endswith(f" *** history continues in {files[days[1]]}")
    assert new[0].endswith(f" *** history continues from {files[days[0]]}")
    assert new[-1].endswith(" *** stopped by SIGINT")
    numbers = []
    for day, lines in zip(days, (old, new), strict=True):
        chat = [line for line in lines if " *** " not in line]
        assert all(line.startswith(day) for line in chat), day  # each line in the file of the day it came
        numbers += [int(line.split()[4]) for line in chat]
    assert numbers == list(range(1, sent + 1)), "a line lost or doubled at midnight"
    assert len([line for line in old if " *** " not in line]) > 0
    assert stat.S_IMODE(files[days[1]].parent.stat().st_mode) == 0o700


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
