"""The backlog after accidents: a long scan stopped by Ctrl-C, a rotated history, a NUL-filled tail, a cut record."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import time
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import POSIX_ONLY, WAIT, RecordingDelays, RecordingOut

import read_client
from _minechat.backlog import BACKLOG_LINE_BYTES, CUT_MARK, read_backlog
from _minechat.history import HISTORY_FORMATS, HistoryPattern
from _minechat.jsonl import format_json_record
from read_client import ReaderSettings

DEFAULT_FORMAT = "[%d.%m.%y %H:%M]"
ISO = "2026-11-27T10:00:00+00:00"

# Notes only, so the backlog must read the whole file back to find no chat: a scan of seconds.
NOTE_LINE = b"[27.11.26 10:00] *** x\n"
NOTE_COUNT = 600_000
STOP_PROMISE = 1.0  # seconds from Ctrl-C to the end


@pytest.mark.slow
@POSIX_ONLY
async def test_ctrl_c_during_a_long_backlog_scan_stops_within_a_second(
    server: FakeMinechatServer, tmp_path: Path, default_signal_handlers: None
) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(NOTE_LINE * NOTE_COUNT)
    settings = ReaderSettings("127.0.0.1", server.read_port, path, WAIT, verbose=False, backlog=10)
    task = asyncio.create_task(read_client.run(settings, RecordingOut(), RecordingDelays()))
    await asyncio.sleep(0)  # let it start; the scan itself is what takes long
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)
    started = time.monotonic()
    code = await asyncio.wait_for(task, WAIT * 2)
    assert time.monotonic() - started < STOP_PROMISE
    assert code == 130
    assert server.reader_connections == 0


# --- rotation and power cuts ------------------------------------------------------------


def test_backlog_reads_compressed_dated_files_once(tmp_path: Path) -> None:
    pattern = HistoryPattern(tmp_path / "%Y-%m-%d.txt")
    current = tmp_path / "2026-11-28.txt"
    current.write_text("[28.11.26 00:00] *** history continues from 2026-11-27.txt\n", encoding="utf-8")
    older = tmp_path / "2026-11-26.txt.gz"
    older.write_bytes(gzip.compress(b"[26.11.26 23:59] Eve: two days ago\n"))
    os.utime(older, (1, 1))
    # A compression cut off after the rename: the .gz and its plain file both hold the day, read once.
    (tmp_path / "2026-11-27.txt").write_text("[27.11.26 23:59] Bob: yesterday\n", encoding="utf-8")
    (tmp_path / "2026-11-27.txt.gz").write_bytes(gzip.compress(b"[27.11.26 23:59] Bob: yesterday\n"))
    (tmp_path / "2026-11-25.txt.gz.tmp").write_bytes(b"not a history file")
    assert pattern.earlier_files(current) == [tmp_path / "2026-11-27.txt", older]
    shown = read_backlog([current, *pattern.earlier_files(current)], 10, DEFAULT_FORMAT)
    assert shown == ["[26.11.26 23:59] Eve: two days ago", "[27.11.26 23:59] Bob: yesterday"]


@pytest.mark.parametrize("rotated", ["chat_logs.txt.1", "chat_logs.txt-20261127"])
def test_backlog_looks_into_the_rotated_file(tmp_path: Path, rotated: str) -> None:
    current = tmp_path / "chat_logs.txt"
    current.write_text("[27.11.26 10:05] *** connecting to minechat.dvmn.org:5000\n", encoding="utf-8")
    (tmp_path / rotated).write_text("[27.11.26 10:00] Eve: before the rotation\n", encoding="utf-8")
    compressed = tmp_path / "chat_logs.txt.2.gz"
    compressed.write_bytes(gzip.compress(b"[27.11.26 09:30] Eve: compressed by logrotate\n"))
    os.utime(compressed, (1, 1))  # older than the rotated copy
    (tmp_path / "chat_logs.txt.bak").write_text("[27.11.26 09:00] Eve: not a rotation\n", encoding="utf-8")
    pattern = HistoryPattern(current)
    assert pattern.earlier_files(current) == [tmp_path / rotated, compressed]
    shown = read_backlog([current, *pattern.earlier_files(current)], 10, DEFAULT_FORMAT)
    assert shown == ["[27.11.26 09:30] Eve: compressed by logrotate", "[27.11.26 10:00] Eve: before the rotation"]


def test_nul_filled_tail_is_not_shown_as_chat(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    # What a power cut after appends leaves on ext4 or xfs, and the next run's first note after it.
    history.write_bytes(
        b"[27.11.26 10:00] Eve: hi\n[27.11.26 10:01] Bob: cut\0\0\0" + b"\0" * 262_144 + b"\n[27.11.26 10:02] *** x\n"
    )
    assert read_backlog([history], 10, DEFAULT_FORMAT) == ["[27.11.26 10:00] Eve: hi", "[27.11.26 10:01] Bob: cut"]


def test_escaped_length_counts_toward_the_cut(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    history.write_bytes(b"[27.11.26 10:00] Eve: " + b"\x1b" * 60_000 + b"\n")
    [line] = read_backlog([history], 10, DEFAULT_FORMAT)
    assert line.endswith(CUT_MARK)
    assert len(line) <= BACKLOG_LINE_BYTES + len(CUT_MARK)
    assert line.startswith("[27.11.26 10:00] Eve: \\x1b\\x1b")


def test_a_record_cut_at_any_byte_is_ended_as_one_valid_record() -> None:
    record = format_json_record(ISO, 'héllo "q" \\ ünï 😀', nick="Eve", event="lost", retry_in=0.4, ok=True)
    data = record.encode("utf-8").rstrip(b"\n")
    for cut in range(1, len(data)):
        prefix = data[:cut]
        line = prefix + HISTORY_FORMATS["jsonl"].end_cut_line(prefix)
        assert line.endswith(b"\n") and line.count(b"\n") == 1, prefix
        assert isinstance(json.loads(line.decode("utf-8")), dict), prefix


def test_a_record_cut_inside_a_unicode_escape_is_ended_as_one_valid_record() -> None:
    # DEL, C1 and bidi controls are written as \uXXXX escapes: a cut can fall between their six characters.
    record = format_json_record(ISO, "a\x7fb\u202ec\u2028d", nick="E\x85ve")
    assert record.count("\\u") == 4
    data = record.encode("utf-8").rstrip(b"\n")
    for cut in range(1, len(data)):
        prefix = data[:cut]
        line = prefix + HISTORY_FORMATS["jsonl"].end_cut_line(prefix)
        assert isinstance(json.loads(line.decode("utf-8")), dict), prefix
