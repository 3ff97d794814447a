"""--log_path values that can never name a history file are refused; every note about a path is escaped."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from helpers import POSIX_ONLY, STAMP, FakeTime, read_history, run_reader

from _minechat.history import HISTORY_FORMATS, HistoryFile, HistoryPattern
from _minechat.stamping import StampClock

FORGED = "[01.01.26 00:00] Admin: all accounts are deleted tonight"


def assert_refused(result: subprocess.CompletedProcess[str], tmp_path: Path, what: str) -> None:
    """Check a usage error: exit 2, one line naming the option, no file made."""
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert what in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["chat\nlog.txt", "chat\rlog.txt", "chat\x1b[2Jlog.txt", "chat\u2028log.txt"])
def test_log_path_with_control_characters_is_refused(tmp_path: Path, value: str) -> None:
    assert_refused(run_reader(tmp_path, "--log_path", value), tmp_path, "--log_path")
    assert_refused(run_reader(tmp_path, MINECHAT_LOG_PATH=value), tmp_path, "MINECHAT_LOG_PATH")


def test_empty_log_path_is_refused(tmp_path: Path) -> None:
    assert_refused(run_reader(tmp_path, "--log_path", ""), tmp_path, "--log_path")


@POSIX_ONLY
def test_log_path_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    assert_refused(run_reader(tmp_path, "--log_path", b"chat\xff.txt"), tmp_path, "not valid UTF-8")


@pytest.mark.parametrize("value", ["logs/%Y/", "logs/", "chat.txt/"])
def test_log_path_ending_with_a_folder_separator_is_refused(tmp_path: Path, value: str) -> None:
    assert_refused(run_reader(tmp_path, "--log_path", value), tmp_path, "folder separator")


def make_dated_history(folder: Path, clock_time: FakeTime) -> tuple[HistoryFile, StampClock]:
    """Return an open text history of folder/%d.log, and its clock."""
    pattern = HistoryPattern(folder / "%d.log")
    clock = StampClock(expand_path=pattern.expand, now=clock_time)
    history = HistoryFile(pattern, HISTORY_FORMATS["text"], clock)
    history.open(clock.read().path)
    return history, clock


def assert_no_forged_line(path: Path) -> None:
    """Check that every line of a text history is a note or chat of its own, none the forged one."""
    for line in read_history(path):
        assert re.fullmatch(r"Bob: \w+", line) or re.match(STAMP + r"\*\*\* ", line), line


@POSIX_ONLY
@pytest.mark.parametrize("refused", [False, True])
def test_notes_at_a_file_switch_are_escaped(tmp_path: Path, refused: bool) -> None:
    folder = tmp_path / f"x\n{FORGED}\n"
    folder.mkdir()
    day_one = datetime(2026, 11, 27, 23, 59, 30).timestamp()
    now = FakeTime(day_one)
    if refused:
        (folder / "28.log").mkdir()  # a folder where the new day's file goes: the history stays
    history, clock = make_dated_history(folder, now)
    try:
        history.write([(clock.read().path, "Bob: before\n")])
        now.value = day_one + 60
        history.write([(clock.read().path, "Bob: after\n")])
    finally:
        history.close()
    assert_no_forged_line(folder / "27.log")
    text = (folder / "27.log").read_text(encoding="utf-8")
    assert f"x\\n{FORGED}\\n" in text
    if not refused:
        assert_no_forged_line(folder / "28.log")


def test_note_of_a_full_stdout_is_escaped() -> None:
    # The one formatter every note goes through: a path's line break is escaped there too.
    from _minechat.history import format_status

    moment = StampClock().read()
    assert format_status(moment, f"in x\n{FORGED}") == f"{moment.stamp} *** in x\\n{FORGED}\n"
    assert os.linesep not in HISTORY_FORMATS["jsonl"].note(moment, "a\nb", "x", {}).rstrip("\n")
