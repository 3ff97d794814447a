"""What issue 10 added to the history: time formats, JSON Lines, dated files, the backlog at start."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import stat
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    ISO_FORMAT,
    ISO_STAMP,
    MIDNIGHT_AHEAD,
    ODD_OFFSET,
    ODD_ZONE,
    POSIX_ONLY,
    STAMP,
    WAIT,
    FakeTime,
    RecordingDelays,
    RecordingOut,
    StartReader,
    chat_of,
    chat_of_stamped,
    spawn_reader,
    status_of,
    stop,
    stop_with_signal,
    wait_for_file,
    zone_with_midnight_in,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import read_client
from _minechat.backlog import lines_from_end, read_backlog
from _minechat.history import HistoryPattern
from chat_io import AlreadyRunning
from read_client import ReaderSettings

# --- reading the history from its end --------------------------------------------


def test_lines_from_end_across_cut_characters() -> None:
    lines = [f"[01.01.26 00:00] Ева{number}: привет, как дела? ✓ 😀".encode() for number in range(40)]
    data = b"\n".join(lines) + b"\n"
    # Every block size from 1 byte up: blocks end inside characters of 2, 3 and 4 bytes.
    for block_size in range(1, 64):
        found = [line for line, cut in lines_from_end(io.BytesIO(data), block_size=block_size)]
        assert found == lines[::-1], block_size


def test_lines_from_end_cuts_long_lines_between_characters() -> None:
    long = "ж".encode() * 100
    data = b"first\n" + long + b"\nlast"  # a file cut off mid-line: its last line counts too
    found = list(lines_from_end(io.BytesIO(data), block_size=7, limit=11))
    assert found == [(b"last", False), ("ж".encode() * 5, True), (b"first", False)]


def test_backlog_reads_both_formats_and_skips_notes(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    history.write_bytes(
        b"[01.01.26 10:00] *** connected to h:5000\n"
        b"[01.01.26 10:01] Eve: one\n"
        b'{"time": "2026-01-01T10:02:00+03:00", "nick": "Bob", "text": "two \\u001b[2J"}\n'
        b'{"time": "2026-01-01T10:03:00+03:00", "nick": null, "text": "lost", "event": "lost"}\n'
        b'{"time": "2026-01-01T10:04:00+03:00", "nick": null, "text": "three"}\n'
        b"2026-01-01 10:05 *** connected\n"  # a note stamped in another format, the one now in use
        b"[01.01.26 10:06] Eve: *** four\n"
    )
    assert read_backlog([history], 10, "%Y-%m-%d %H:%M") == [
        "[01.01.26 10:01] Eve: one",
        "2026-01-01 10:02 Bob: two \\x1b[2J",
        "2026-01-01 10:04 three",
        "[01.01.26 10:06] Eve: *** four",
    ]
    assert read_backlog([history], 2, "%Y-%m-%d %H:%M") == ["2026-01-01 10:04 three", "[01.01.26 10:06] Eve: *** four"]


# --- dated files: paths, locks, earlier files ---------------------------------------


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


# --- options -------------------------------------------------------------------------


def test_options_from_the_environment_and_the_command_line(tmp_path: Path) -> None:
    environ = {"TIME_FORMAT": ISO_FORMAT, "FORMAT": "jsonl", "BACKLOG": "0", "LOG_PATH": "logs/%Y/%m-%d.txt"}
    settings = read_client.parse_settings([], environ, tmp_path)
    assert (settings.time_format, settings.history_format, settings.backlog) == (ISO_FORMAT, "jsonl", 0)
    assert settings.log_path == tmp_path / "logs/%Y/%m-%d.txt"
    argv = ["--time-format", "%H:%M:%S", "--format", "text", "--backlog", "3"]
    settings = read_client.parse_settings(argv, environ, tmp_path)
    assert (settings.time_format, settings.history_format, settings.backlog) == ("%H:%M:%S", "text", 3)
    defaults = read_client.parse_settings([], {}, tmp_path)
    assert (defaults.time_format, defaults.history_format, defaults.backlog) == ("[%d.%m.%y %H:%M]", "text", 10)


def test_a_folder_with_percent_in_its_name_is_taken_literally(tmp_path: Path) -> None:
    folder = tmp_path / "100%"
    folder.mkdir()
    settings = read_client.parse_settings([], {}, folder)
    assert HistoryPattern(settings.log_path).expand(datetime.now()) == str(folder / "chat_logs.txt")


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"FORMAT": "xml"}, "FORMAT=xml (from the environment): expected one of text, jsonl"),
        ({"BACKLOG": "-1"}, "BACKLOG=-1 (from the environment): -1 is less than 0"),
        ({"BACKLOG": "many"}, "BACKLOG=many (from the environment): 'many' is not a number of lines"),
        ({"TIME_FORMAT": "%H\n%M"}, "TIME_FORMAT=%H\\n%M (from the environment): it gives a stamp with control"),
        ({"LOG_PATH": "50%.log"}, "LOG_PATH=50%.log (from the environment): %. is no date or time field"),
    ],
)
def test_bad_values_name_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], environ, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert len(err.splitlines()) == 1


# --- the reader, in-process -----------------------------------------------------------


async def test_time_format_sets_the_stamp(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader(time_format=ISO_FORMAT)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Eve: hi\n")
    (line,) = await reader.out.wait_for_lines(1)
    assert re.fullmatch(ISO_STAMP + " Eve: hi", line)
    stamp = datetime.strptime(line.split(" ")[0], ISO_FORMAT)
    assert abs(stamp - datetime.now().astimezone()) < timedelta(seconds=WAIT)
    history = reader.settings.log_path.read_text(encoding="utf-8").splitlines()
    assert history[-1] == line
    assert all(re.match(ISO_STAMP + r" \*\*\* ", note) for note in history[:-1])


async def test_jsonl_history_every_record_parses_with_its_fields(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    reader = await start_reader(log_path=path, history_format="jsonl", time_format="%H:%M:%S")
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast("Boring Eve: привет: всем\nno nick\nEve: \x1b[2J\x9b\u202e\r\n".encode() + b"Eve: caf\xc3\n")
    await reader.out.wait_for_lines(4)
    await server.drop_readers()
    await reader.delays.wait_for_taken(1)
    await server.wait_until(lambda: len(server.readers) == 1)
    await stop(reader)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all({"time", "nick", "text"} <= set(record) for record in records)
    for record in records:
        when = datetime.fromisoformat(record["time"])
        assert when.utcoffset() is not None
        assert abs(when - datetime.now().astimezone()) < timedelta(seconds=WAIT)
    chat = [(record["nick"], record["text"]) for record in records if "event" not in record]
    assert chat == [
        ("Boring Eve", "привет: всем"),
        (None, "no nick"),
        ("Eve", "\x1b[2J\x9b\u202e"),
        ("Eve", "caf\ufffd"),
    ]
    events = [record["event"] for record in records if "event" in record]
    assert events == ["connecting", "connected", "lost", "connecting", "connected"]
    lost = next(record for record in records if record.get("event") == "lost")
    assert lost["error"] == "the server closed the connection"
    assert lost["retry_in"] == 0.0
    assert lost["text"].startswith("connection lost: the server closed the connection; next try in ")
    # Stdout stays text, and escaped.
    shown = reader.out.lines
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d .*", line) for line in shown)
    assert [line[9:] for line in shown] == [
        "Boring Eve: привет: всем",
        "no nick",
        "Eve: \\x1b[2J\\x9b\\u202e",
        "Eve: caf\ufffd",
    ]


async def test_jsonl_record_cut_by_a_rotation_is_closed_and_goes_on_marked(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    reader = await start_reader(log_path=path, history_format="jsonl")
    await server.wait_until(lambda: len(server.readers) == 1)
    forged = b'{"time": "2026-01-01T00:00:00+00:00", "nick": "Admin", "text": "forged"}'
    await server.broadcast(b"Eve: " + b"a" * (3 * 64 * 1024) + forged)
    await wait_for_file(path, lambda data: data.endswith(b"a" * 100), WAIT)
    path.rename(tmp_path / "chat.jsonl.1")
    await server.broadcast(b"\nBob: after\n")
    await wait_for_file(path, lambda data: b"Bob" in data, WAIT)
    await stop(reader)
    moved = [json.loads(line) for line in (tmp_path / "chat.jsonl.1").read_text(encoding="utf-8").splitlines()]
    fresh = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert moved[-1]["nick"] == "Eve" and set(moved[-1]["text"]) == {"a"}
    assert fresh[0]["event"] == "file_reopened"
    assert fresh[1]["continued"] is True and fresh[1]["nick"] is None
    assert moved[-1]["text"] + fresh[1]["text"] == "a" * (3 * 64 * 1024) + forged.decode()
    assert (fresh[2]["nick"], fresh[2]["text"]) == ("Bob", "after")


async def test_backlog_shows_the_last_chat_lines_and_does_not_write_them_again(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    path = tmp_path / "chat.log"
    old = [f"[01.01.26 10:{number % 60:02d}] Eve: строка {number}" for number in range(3000)]
    old.insert(-2, "[01.01.26 11:00] *** connection lost: reset; next try in 0.5 s")
    for _ in range(64):  # pad the last line until the first block read back begins inside a character
        data = ("\n".join(old) + "\n").encode()
        if data[len(data) - _minechat.backlog.BACKLOG_BLOCK_BYTES] & 0xC0 == 0x80:
            break
        old[-1] += " "
    else:
        raise AssertionError("no padding puts a block edge inside a character")
    path.write_bytes(data)
    reader = await start_reader(backlog=3)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Bob: live\n")
    lines = await reader.out.wait_for_lines(5)
    assert lines[:3] == [old[-4], old[-2], old[-1]]
    assert re.fullmatch(STAMP + r"\*\*\* the last 3 chat lines of the history; live chat follows", lines[3])
    assert lines[4].endswith("] Bob: live")
    await stop(reader)
    written = path.read_bytes()
    assert written.startswith(data)
    assert chat_of(written[len(data) :].decode().splitlines()) == ["Bob: live"]


async def test_backlog_across_a_cut_character_at_every_block_edge(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    lines = [f"[01.01.26 10:00] Ева: {'ж' * number}✓" for number in range(60)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for block_size in (5, 6, 7, 64, 65):
        with open(path, "rb") as file:
            found = [raw.decode() for raw, _ in lines_from_end(file, block_size=block_size)]
        assert found == lines[::-1]
    assert read_backlog([path], 4, "[%d.%m.%y %H:%M]") == lines[-4:]


async def test_backlog_zero_shows_nothing(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    (tmp_path / "chat.log").write_text("[01.01.26 10:00] Eve: old\n", encoding="utf-8")
    reader = await start_reader(backlog=0)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Bob: live\n")
    lines = await reader.out.wait_for_lines(1)
    assert len(lines) == 1 and lines[0].endswith("] Bob: live")


async def test_no_history_no_backlog_line(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Bob: live\n")
    lines = await reader.out.wait_for_lines(1)
    assert len(lines) == 1 and lines[0].endswith("] Bob: live")


async def test_backlog_looks_back_through_earlier_days(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    (folder / "2026-01").mkdir(parents=True)
    (folder / "2026-01" / "30.log").write_text("[30.01.26 10:00] A: one\n[30.01.26 10:01] A: two\n")
    (folder / "2026-01" / "31.log").write_text(
        "[31.01.26 10:00] A: three\n[31.01.26 23:59] *** history continues in logs/2026-02/01.log\n"
    )
    os.utime(folder / "2026-01" / "30.log", (1_700_000_000, 1_700_000_000))
    (folder / "2026-02").mkdir()
    (folder / "2026-02" / "01.log").write_text(
        "[01.02.26 00:00] *** history continues from 31.log\n[01.02.26 09:00] A: four\n"
    )
    now = FakeTime(datetime(2026, 2, 1, 12, 0).timestamp())
    reader = await start_reader(log_path=folder / "%Y-%m" / "%d.log", now=now, backlog=3)
    lines = await reader.out.wait_for_lines(4)
    assert lines[:3] == ["[30.01.26 10:01] A: two", "[31.01.26 10:00] A: three", "[01.02.26 09:00] A: four"]
    assert "the last 3 chat lines of the history" in lines[3]


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


# --- in a process of its own ---------------------------------------------------------------


@POSIX_ONLY
async def test_jsonl_times_carry_the_offset_and_the_stop_is_an_event(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    process = await spawn_reader(
        server.read_port, "--log_path", str(path), "--format", "jsonl", cwd=tmp_path, zone=ODD_ZONE
    )
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        await server.broadcast(b"Eve: hi\n")
        await wait_for_file(path, lambda data: b'"nick": "Eve"' in data, WAIT)
    finally:
        code = await stop_with_signal(process, signal.SIGTERM)
    assert code == 143
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # Local time of the client's zone (UTC+13:37, which no caller's zone is), with its offset.
    assert all(datetime.fromisoformat(record["time"]).utcoffset() == ODD_OFFSET for record in records)
    assert all(record["time"].endswith("+13:37") for record in records)
    assert [record["text"] for record in records if "event" not in record] == ["hi"]
    assert {key: records[-1][key] for key in ("nick", "text", "event", "signal")} == {
        "nick": None, "text": "stopped by SIGTERM", "event": "stopped", "signal": "SIGTERM",
    }  # fmt: skip
    # Stdout stays text.
    assert re.fullmatch(STAMP + "Eve: hi\n", (await process.stdout.read()).decode())


# --- midnight, for real ------------------------------------------------------------------


@POSIX_ONLY
async def test_midnight_while_running_starts_the_next_file(server: FakeMinechatServer, tmp_path: Path) -> None:
    pattern = tmp_path / "logs" / "%Y" / "%m-%d.log"
    options = ("--log_path", str(pattern), "--time-format", "%Y %m-%d %H:%M:%S", "--backlog", "0")
    process = await spawn_reader(server.read_port, *options, cwd=tmp_path, zone=zone_with_midnight_in(MIDNIGHT_AHEAD))
    sent = 0
    days: list[str] = []
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
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
    assert code == 130, (await process.stderr.read()).decode()
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
