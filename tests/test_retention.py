"""--compress and --keep-days: finished files of a dated history gzipped crash-safely, old ones removed, no others."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import random
import time
from collections import Counter
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
    client_process_sync,
    free_port,
    read_main,
    wait_for_file,
    wait_for_path_gone,
)

import _minechat.retention
import read_client
from _minechat.archive import history_files, read_blocks
from _minechat.history import HistoryPattern
from _minechat.retention import compress_file, tidy
from chat_io import EXIT_USAGE, lock_file
from read_client import ReaderSettings

NOW = datetime(2026, 12, 6, 12, 0)


def write_day(folder: Path, day: int, lines: int = 3, suffix: str = ".txt", year: int = 2026) -> Path:
    """Write a day's file of December of numbered lines, last written at the end of that day."""
    path = folder / f"{year}-12-{day:02d}{suffix}"
    data = "".join(f"[{day:02d}.12.{year % 100} 10:00] Eve: day {day} line {n}\n" for n in range(lines)).encode()
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    stamp = datetime(year, 12, day, 23, 59).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_compress_keeps_the_text_the_mode_and_the_time(tmp_path: Path) -> None:
    path = write_day(tmp_path, 1)
    path.chmod(0o600)
    data, status = path.read_bytes(), path.stat()
    assert compress_file(path)
    packed = tmp_path / "2026-12-01.txt.gz"
    assert not path.exists()
    assert gzip.decompress(packed.read_bytes()) == data
    assert packed.stat().st_mtime == status.st_mtime  # it sorts where the plain file did
    assert packed.stat().st_mode & 0o777 == 0o600
    assert sorted(tmp_path.iterdir()) == [packed]


def test_a_file_another_reader_holds_is_never_touched(tmp_path: Path) -> None:
    path = write_day(tmp_path, 1)
    data = path.read_bytes()
    descriptor = os.open(path, os.O_RDWR)
    try:
        assert lock_file(descriptor, wait=False)  # as a reader holds the file it writes
        assert not compress_file(path)
        tidy(HistoryPattern(tmp_path / "%Y-%m-%d.txt"), tmp_path / "2026-12-06.txt", True, 1, NOW)
        assert path.read_bytes() == data
        assert sorted(tmp_path.iterdir()) == [path]
    finally:
        os.close(descriptor)


def test_tidy_compresses_finished_files_and_leaves_the_current_one(tmp_path: Path) -> None:
    for day in (3, 4, 5, 6):
        write_day(tmp_path, day)
    (tmp_path / "2026-12-02.txt.gz.tmp").write_bytes(b"what a crash left of a compression")
    (tmp_path / "2026-12-02.txt").write_bytes(b"[02.12.26 10:00] Eve: compressed before\n")
    (tmp_path / "2026-12-02.txt.gz").write_bytes(gzip.compress(b"[02.12.26 10:00] Eve: compressed before\n"))
    tidy(HistoryPattern(tmp_path / "%Y-%m-%d.txt"), tmp_path / "2026-12-06.txt", True, 0, NOW)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [
        "2026-12-02.txt.gz",
        "2026-12-03.txt.gz",
        "2026-12-04.txt.gz",
        "2026-12-05.txt.gz",
        "2026-12-06.txt",
    ]


def test_keep_days_removes_only_old_files_of_the_pattern(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    made = [write_day(logs, 1), write_day(logs, 2, suffix=".txt.gz"), write_day(logs, 3), write_day(logs, 4)]
    current = write_day(logs, 6)
    os.utime(current, (1, 1))  # the current file, however old it looks, is never removed
    others = [
        logs / "2026-12-01.txt.bak",
        logs / "2026-12-01.log",
        logs / "notes.txt",
        logs / "2026-12-xx.txt",
        logs / "2026-12-01.txt.gz.tmp",
        logs / ".%Y-%m-%d.txt.read_client.lock",
        tmp_path / "2026-12-01.txt",  # the right name in another folder
        logs / "old" / "2026-12-01.txt",
    ]
    for path in others:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not the history's\n")
        os.utime(path, (1, 1))
    tidy(HistoryPattern(logs / "%Y-%m-%d.txt"), current, False, 3, NOW)
    assert [path.exists() for path in made] == [False, False, True, True]  # the 3rd is 3 days old: kept
    assert current.exists()
    assert all(path.read_bytes() == b"not the history's\n" for path in others)


@pytest.mark.parametrize("option", [["--compress"], ["--keep-days", "7"]])
def test_an_undated_log_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    code, err = read_main(["--log_path", str(tmp_path / "chat.txt"), *option], capsys)
    assert code == EXIT_USAGE
    assert "need a dated --log_path" in err
    assert "logrotate" in err
    assert err.count("\n") == 1


def test_keep_days_from_the_environment(tmp_path: Path) -> None:
    settings = read_client.parse_settings(
        ["--log_path", str(tmp_path / "%Y-%m-%d.txt")],
        {"MINECHAT_KEEP_DAYS": "30", "MINECHAT_COMPRESS": "yes"},
        tmp_path,
    )
    assert (settings.keep_days, settings.compress) == (30, True)


# --- a reader killed while it compresses ------------------------------------------------------------------

DAYS = (1, 2, 3, 4)
YEAR = 2020  # days long past, whenever the test runs: each is a finished file
LINES_PER_DAY = 20_000
KILL_RUNS = 20


def day_file(folder: Path, day: int, suffix: str = ".txt") -> Path:
    return folder / f"{YEAR}-12-{day:02d}{suffix}"


def lines_read(folder: Path) -> Counter[str]:
    """Return every line the archive reads (as --search and --coverage read it), counted."""
    found: Counter[str] = Counter()
    for path in history_files(HistoryPattern(folder / "%Y-%m-%d.txt"), NOW):
        if not path.name.startswith(f"{YEAR}-"):
            continue  # the reader's own current file: its notes
        for block in read_blocks(path):
            found.update(block.decode().splitlines())
    return found


def check_whole(folder: Path, expected: Counter[str]) -> str:
    """Check every line is read once and every .gz under its final name is whole; return the state seen."""
    for path in folder.glob("*.gz"):
        gzip.decompress(path.read_bytes())  # a cut .gz raises
    assert lines_read(folder) == expected
    plain = [day for day in DAYS if day_file(folder, day).exists()]
    packed = [day for day in DAYS if day_file(folder, day, ".txt.gz").exists()]
    assert set(plain) | set(packed) == set(DAYS)  # a whole copy of every day
    return "before" if not packed else "done" if not plain else "midway"


@pytest.mark.slow
@pytest.mark.timeout(120)
@POSIX_ONLY
def test_a_reader_killed_while_compressing_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(23)
    port = free_port()  # refused: the reader retries while it compresses
    expected: Counter[str] = Counter()
    originals = {}
    for day in DAYS:
        originals[day] = write_day(tmp_path, day, LINES_PER_DAY, year=YEAR).read_bytes()
        expected.update(originals[day].decode().splitlines())

    def reset(folder: Path) -> None:
        folder.mkdir()
        for day, data in originals.items():
            day_file(folder, day).write_bytes(data)

    def compressing(folder: Path) -> bool:
        return any(folder.glob("*.tmp")) or any(folder.glob("*.gz"))

    def run(folder: Path, kill_after: float | None) -> float:
        """Run a reader until it compresses, then kill_after seconds more (None: until it is done); return those."""
        argv = ["--log_path", str(folder / "%Y-%m-%d.txt"), "--compress", "--backlog", "0"]
        with client_process_sync("read_client.py", *argv, cwd=folder, port=port) as process:
            deadline = time.monotonic() + 60
            while not compressing(folder):
                assert time.monotonic() < deadline
                time.sleep(0.001)
            started = time.monotonic()
            if kill_after is not None:
                time.sleep(kill_after)
            else:
                while any(day_file(folder, day).exists() for day in DAYS):
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
            process.kill()
            process.wait()
        return time.monotonic() - started

    calibration = tmp_path / "calibration"
    reset(calibration)
    compressing_for = run(calibration, None)
    assert check_whole(calibration, expected) == "done"
    states: Counter[str] = Counter()
    for number in range(KILL_RUNS):
        folder = tmp_path / f"run{number}"
        reset(folder)
        run(folder, rng.uniform(0, compressing_for))
        states[check_whole(folder, expected)] += 1
        tidy(HistoryPattern(folder / "%Y-%m-%d.txt"), folder / "current.txt", True, 0, NOW)  # as the next start does
        assert check_whole(folder, expected) == "done"
        assert not list(folder.glob("*.tmp"))
    assert states["midway"] >= KILL_RUNS // 4, states  # most kills land while it compresses


async def test_a_running_reader_compresses_the_day_it_left_at_midnight(
    server: FakeMinechatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_minechat.retention, "CHECK_SECONDS", 0.01)
    clock = FakeTime(datetime(2026, 12, 5, 23, 59, 50).timestamp())
    pattern = tmp_path / "%Y-%m-%d.log"
    settings = ReaderSettings("127.0.0.1", server.read_port, pattern, WAIT, False, backlog=0, compress=True)
    task = asyncio.create_task(read_client.run(settings, RecordingOut(), RecordingDelays(), clock))
    try:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"Eve: before midnight\n")
        yesterday = await wait_for_file(tmp_path / "2026-12-05.log", lambda data: b"before midnight" in data)
        assert not (tmp_path / "2026-12-05.log.gz").exists()  # the file it writes is not finished
        clock.value += 20
        await server.broadcast(b"Eve: after midnight\n")
        await wait_for_file(tmp_path / "2026-12-06.log", lambda data: b"after midnight" in data)
        packed = await wait_for_file(tmp_path / "2026-12-05.log.gz", lambda data: len(data) > 0)
        await wait_for_path_gone(tmp_path / "2026-12-05.log")
        text = gzip.decompress(packed)
        assert text.startswith(yesterday)
        assert b"history continues in" in text
        assert (tmp_path / "2026-12-06.log").exists()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
