"""Attacks on read_client's promises; each xfail(strict) test documents a defect that is still there."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, ROOT, STOP_WAIT, WAIT, client_env, stop_with_signal
from fake_server import FakeMinechatServer
from test_read_client import STAMP, chat_of, read_history, status_of
from test_read_faults import UnreadPipe, numbered, peak_rss_kb, start_process, wait_for_file

from chat_io import EXIT_LOCKED, MAX_LINE_BYTES

FORGED = b"[01.01.25 00:00] Admin: the server moves, log in at evil.example"


@POSIX_ONLY
@pytest.mark.xfail(
    strict=True,
    reason="stdout skips a long line's first piece, then prints its unstamped rest as a line of its own: a forged line",
)
async def test_stdout_skip_inside_a_long_line_forges_a_line(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    out = UnreadPipe()
    process = await start_process(server.read_port, history, stdout=out.write_end, stderr=subprocess.DEVNULL)
    out.close_write_end()
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        # Fill the pipe and the stdout queue while nobody reads stdout.
        await server.broadcast(numbered(1, 20_000))
        await wait_for_file(history, lambda data: b"Bob: 0020000 " in data)
        # Then in small batches, so that stdout's queue fills up to the brim.
        for first in range(20_001, 30_001, 10):
            await server.broadcast(numbered(first, 10))
            await asyncio.sleep(0.001)
        await wait_for_file(history, lambda data: b"Bob: 0030000 " in data)
        # The first 64 KiB piece of a long line is skipped on stdout; the rest waits in the client.
        head = b"Eve: "
        await server.broadcast(head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED)
        await wait_for_file(history, lambda data: data.endswith(b"a" * 100))
        # The piece goes to stdout's queue right after the history write; there is nothing to wait on.
        await asyncio.sleep(0.5)
        # The pager scrolls on and catches up: the client says what it skipped.
        await out.read_until(rb"\*\*\* \d+ lines? not shown here[^\n]*\n")
        # The long line ends.
        await server.broadcast(b"\nBob: after\n")
        shown = await out.read_until(rb"Bob: after\n")
    finally:
        await stop_with_signal(process, signal.SIGINT)
        out.close()
    lines = read_history(history)
    assert chat_of(lines)[-2:] == [(head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED).decode(), "Bob: after"]
    # stdout: every line either starts with a stamp and is what the history holds, or is a note.
    printed = shown.decode().splitlines()
    assert FORGED.decode() not in printed, "stdout shows a forged line"


@pytest.mark.xfail(
    strict=True,
    reason="after a rotation inside a long line, the new file starts with the line's unstamped rest: a forged line",
)
@pytest.mark.parametrize("how", ["rename", "delete"])
async def test_rotation_inside_a_long_line_forges_a_line(server: FakeMinechatServer, tmp_path: Path, how: str) -> None:
    history = tmp_path / "chat.log"
    process = await start_process(server.read_port, history, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        head = b"Eve: "
        await server.broadcast(head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED)
        await wait_for_file(history, lambda data: data.endswith(b"a" * 100))
        if how == "rename":
            history.rename(tmp_path / "chat.log.1")
        else:
            history.unlink()
        await server.broadcast(b"\nBob: after\n")
        await wait_for_file(history, lambda data: b"Bob: after" in data)
    finally:
        await stop_with_signal(process, signal.SIGINT)
    fresh = read_history(history)
    # Every line of the new file is stamped by the client; the chat cannot choose how one starts.
    assert all(re.match(STAMP, line) for line in fresh), fresh[:3]
    assert FORGED.decode() not in fresh, "the new history file starts a line with text the chat chose"


@POSIX_ONLY
@pytest.mark.xfail(strict=True, reason="the lock goes by name (realpath), not by file: a hard link gets a 2nd reader")
async def test_hard_link_to_the_history_gets_no_second_reader(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    first = await start_process(server.read_port, history, stdout=subprocess.DEVNULL)
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        os.link(history, tmp_path / "same.log")
        second = await start_process(server.read_port, tmp_path / "same.log", stdout=subprocess.DEVNULL)
        # Refused, it exits at once; let in, it connects.
        ended = asyncio.ensure_future(second.wait())
        await server.wait_until(lambda: ended.done() or server.reader_connections == 2, timeout=15)
        code = ended.result() if ended.done() else await stop_with_signal(second, signal.SIGINT)
        await ended
    finally:
        await stop_with_signal(first, signal.SIGINT)
    assert code == 7


@POSIX_ONLY
@pytest.mark.xfail(strict=True, reason="Ctrl-C while the settings are read (or modules imported) gives a traceback")
def test_ctrl_c_while_reading_settings_gives_no_traceback(tmp_path: Path) -> None:
    # A big .env holds the client in parse_settings long enough to be interrupted there.
    (tmp_path / ".env").write_text("# comment\n" * 300_000 + "HOST=127.0.0.1\n", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "read_client.py"), "--port", "9", "--log_path", str(tmp_path / "chat.log")],
        cwd=tmp_path,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # past the interpreter's start, well inside the .env
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert b"Traceback" not in err
    assert process.returncode == 130


@POSIX_ONLY
@pytest.mark.xfail(
    strict=True,
    reason="a further Ctrl-C while main() waits for a blocked stderr (flush_logging, after the signal handlers are "
    "gone) raises KeyboardInterrupt there: the process dies by SIGINT (-2, not 130), or hangs writing a traceback",
)
async def test_ctrl_c_hammered_with_outputs_blocked(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    # A paused terminal: neither stdout nor stderr is read; -v keeps stderr's queue full.
    out, err = UnreadPipe(), UnreadPipe()
    process = await start_process(server.read_port, history, "-v", stdout=out.write_end, stderr=err.write_end)
    out.close_write_end()
    err.close_write_end()
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        await server.broadcast(numbered(1, 30_000))
        await wait_for_file(history, lambda data: b"Bob: 0030000 " in data)
        started = time.monotonic()
        # The user presses Ctrl-C, and again, and again, until the client is gone.
        while process.returncode is None and time.monotonic() - started < 2 * STOP_WAIT:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 0.1)
        stopped_in_time = process.returncode is not None
        shown = await err.read_until(rb"\Z-never", timeout=1.0)  # the terminal resumes: what was stuck comes out
        code = await asyncio.wait_for(process.wait(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        out.close()
        err.close()
    assert code == 130
    assert b"Traceback" not in shown
    assert stopped_in_time
    assert status_of(read_history(history))[-1] == "*** stopped by SIGINT"


@pytest.mark.xfail(strict=True, reason="the lock file NAME.lock is opened with O_CREAT and truncated, whoever's it is")
def test_a_file_named_like_the_lock_is_not_overwritten(tmp_path: Path) -> None:
    # --log_path poetry, in a project folder: poetry.lock belongs to another tool.
    precious = tmp_path / "poetry.lock"
    precious.write_text("[[package]]\nname = 'aiofiles'\n", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "read_client.py"), "--host", "127.0.0.1", "--port", "9", "--log_path", "poetry"],
        cwd=tmp_path,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The first note is written after the history is opened and locked.
        deadline = time.monotonic() + WAIT
        history = tmp_path / "poetry"
        while not (history.exists() and b"*** connecting" in history.read_bytes()) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=WAIT)
    assert precious.read_text(encoding="utf-8") == "[[package]]\nname = 'aiofiles'\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")
@pytest.mark.xfail(
    strict=True,
    reason="memory for a long line is bounded, but 3x the ASCII case when the bytes are invalid UTF-8 "
    "(each becomes U+FFFD: a UCS-2 str, then 3 bytes again); test_four_mib_line_keeps_memory_bounded uses only 'z'",
)
async def test_four_mib_line_of_invalid_utf8_keeps_memory_bounded(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    process = await start_process(server.read_port, history, stdout=subprocess.DEVNULL)
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        await wait_for_file(history, lambda data: b"*** connected" in data)
        before = peak_rss_kb(process.pid)
        await server.broadcast(b"Eve: " + b"\xff" * (4 * 1024 * 1024) + b"\nBob: after\n")
        await wait_for_file(history, lambda data: b"Bob: after" in data)
        grown = peak_rss_kb(process.pid) - before
    finally:
        await stop_with_signal(process, signal.SIGINT)
    assert grown < 6 * 1024, f"grew by {grown} kB"  # the bound of test_four_mib_line_keeps_memory_bounded


@pytest.mark.xfail(
    strict=True,
    reason="README's exit-code table lacks 7 (another reader has the history) and 129 (SIGHUP), and says the reader "
    "ends only with 2, 6, 130 or 143",
)
def test_readme_lists_every_exit_code_of_the_reader() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Exit codes") :]
    table = table[: table.index("\n\n", table.index("| code |"))]
    for code in (EXIT_LOCKED, 128 + signal.SIGHUP):
        assert f"| {code} |" in table, code


@pytest.mark.xfail(strict=True, reason="README says a line over 64 KiB is split over several history lines; it is one")
def test_readme_says_a_long_line_stays_one_line() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "split over several history lines" not in readme
