"""Attacks on read_client's promises, each found by a review that set out to break them, each fixed since."""

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
from fake_server import FakeMinechatServer
from helpers import (
    FORGED_IN_LONG_LINE,
    POSIX_ONLY,
    ROOT,
    STAMP,
    STOP_WAIT,
    WAIT,
    UnreadPipe,
    chat_of,
    client_env,
    finish,
    numbered,
    read_history,
    start_process,
    status_of,
    stop_with_signal,
    wait_for_file,
)

import read_client
from chat_io import EXIT_LOCKED, MAX_LINE_BYTES


@POSIX_ONLY
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
        await server.broadcast(head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED_IN_LONG_LINE)
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
    assert chat_of(lines)[-2:] == [
        (head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED_IN_LONG_LINE).decode(),
        "Bob: after",
    ]
    # stdout: every line either starts with a stamp and is what the history holds, or is a note.
    printed = shown.decode(errors="replace").splitlines()  # the read may start inside a character
    assert FORGED_IN_LONG_LINE.decode() not in printed, "stdout shows a forged line"


@pytest.mark.parametrize("how", ["rename", "delete"])
async def test_rotation_inside_a_long_line_forges_a_line(server: FakeMinechatServer, tmp_path: Path, how: str) -> None:
    history = tmp_path / "chat.log"
    process = await start_process(server.read_port, history, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        head = b"Eve: "
        await server.broadcast(head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED_IN_LONG_LINE)
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
    assert FORGED_IN_LONG_LINE.decode() not in fresh, "the new history file starts a line with text the chat chose"


@POSIX_ONLY
async def test_hard_link_to_the_history_gets_no_second_reader(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    first = await start_process(server.read_port, history, stdout=subprocess.DEVNULL)
    try:
        await server.wait_until(lambda: len(server.readers) == 1, timeout=15)
        os.link(history, tmp_path / "same.log")
        second = await start_process(server.read_port, tmp_path / "same.log", stdout=subprocess.DEVNULL)
        # Refused, it exits at once; let in, it would run until finish() kills it.
        code, err = await finish(second)
    finally:
        await stop_with_signal(first, signal.SIGINT)
    assert "same.log is already being written by another read_client;" in err
    assert code == 7


def test_ctrl_c_while_reading_settings_gives_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Reading a large .env can take a while; Ctrl-C then lands in parse_settings.
    def interrupted(argv: object = None) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(read_client, "parse_settings", interrupted)
    assert read_client.main([]) == 130
    assert "Traceback" not in capsys.readouterr().err


@POSIX_ONLY
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


def test_readme_lists_every_exit_code_of_the_reader() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Exit codes") :]
    table = table[: table.index("\n\n", table.index("| code |"))]
    for code in (EXIT_LOCKED, 128 + signal.SIGHUP):
        assert f"| {code} |" in table, code


def test_readme_says_a_long_line_stays_one_line() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "split over several history lines" not in readme
