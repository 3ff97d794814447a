"""The backlog shown at start: reading the last lines of the history back, in both formats, across earlier days."""

from __future__ import annotations

import io
import os
import re
import signal
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    ISO_UTC,
    POSIX_ONLY,
    STAMP,
    FakeTime,
    StartReader,
    chat_of,
    client_env,
    reader_process,
    stop,
    stop_with_signal,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from _minechat.backlog import BACKLOG_BLOCK_BYTES, BACKLOG_TOTAL_CHARS, CUT_MARK, lines_from_end, read_backlog
from _minechat.history import HISTORY_FORMATS, HistoryPattern
from _minechat.jsonl import JsonLineStamper
from _minechat.stamping import Moment

DEFAULT_FORMAT = "[%d.%m.%y %H:%M]"


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


@pytest.mark.slow
@POSIX_ONLY
async def test_backlog_of_a_deeply_nested_json_line_does_not_crash_the_reader(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    history = tmp_path / "chat.log"
    history.write_bytes(b"[27.11.26 10:00] Eve: hi\n" + b'{"a": ' + b"[" * 5000 + b"\n")
    # A reader that crashes on the backlog never connects: reader_process fails with its stderr.
    async with reader_process(server, history, cwd=tmp_path, env=client_env(TZ="UTC0")) as process:
        await stop_with_signal(process, signal.SIGTERM)
    err = (await process.stderr.read()).decode(errors="replace")
    assert "Traceback" not in err
    assert process.returncode == -signal.SIGTERM, err


def test_backlog_of_a_long_jsonl_line_is_shown_as_chat(tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    long = b"Eve: " + b"z" * (100 * 1024)
    history.write_text(JsonLineStamper().feed(long + b"\nBob: short\n", ISO_UTC), encoding="utf-8")
    shown = read_backlog([history], 10, DEFAULT_FORMAT)
    assert shown[1] == "[27.11.26 10:00] Bob: short"
    assert shown[0].startswith("[27.11.26 10:00] Eve: zzzz"), shown[0][:60]
    assert shown[0].endswith("z [...]")


def test_backlog_hides_notes_stamped_with_a_space_padded_field(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    # '%l' is the hour 1..12, padded with a space: one of these two notes has the other shape than now.
    history.write_text(
        " 9:00 AM *** connecting to minechat.dvmn.org:5000\n"
        "10:00 AM *** connecting to minechat.dvmn.org:5000\n"
        "10:01 AM Eve: hi\n",
        encoding="utf-8",
    )
    assert read_backlog([history], 10, "%l:%M %p") == ["10:01 AM Eve: hi"]


def test_backlog_reads_an_earlier_file_once_whatever_path_finds_it(tmp_path: Path) -> None:
    for year in ("2025", "2026"):
        (tmp_path / "logs" / year).mkdir(parents=True)
    (tmp_path / "logs" / "chat-27.log").write_text("[27.11.26 10:00] Eve: yesterday\n", encoding="utf-8")
    pattern = HistoryPattern(tmp_path / "logs" / "%Y" / ".." / "chat-%d.log")
    current = Path(pattern.expand(datetime(2026, 11, 28, 12, 0)))
    current.write_text("", encoding="utf-8")
    earlier = pattern.earlier_files(current)
    assert read_backlog([current, *earlier], 10, DEFAULT_FORMAT) == ["[27.11.26 10:00] Eve: yesterday"]


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


def test_backlog_of_a_long_continued_jsonl_record_is_shown_as_chat(tmp_path: Path) -> None:
    # What a rotation inside a long line leaves in the new file: a record of our own for the line's rest.
    history = tmp_path / "chat.jsonl"
    head = HISTORY_FORMATS["jsonl"].continued(Moment("", ISO_UTC, str(history)))
    rest = head + "z" * (100 * 1024) + '"}\n'
    history.write_text(rest + JsonLineStamper().feed(b"Bob: short\n", ISO_UTC), encoding="utf-8")
    shown = read_backlog([history], 10, DEFAULT_FORMAT)
    assert shown[1] == "[27.11.26 10:00] Bob: short"
    assert shown[0].startswith("[27.11.26 10:00] zzzz"), shown[0][:60]
    assert shown[0].endswith("z [...]")


def test_backlog_of_a_short_continued_jsonl_record_is_shown_as_chat(tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    head = HISTORY_FORMATS["jsonl"].continued(Moment("", ISO_UTC, str(history)))
    history.write_text(head + 'the rest"}\n', encoding="utf-8")
    assert read_backlog([history], 10, DEFAULT_FORMAT) == ["[27.11.26 10:00] the rest"]
