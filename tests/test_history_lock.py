"""One reader per history: the lock next to the real file, who holds it, and files that only look like it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    START_WAIT,
    STOP_WAIT,
    SYMLINKS,
    client_process_sync,
    finish,
    make_history,
    open_history,
    open_text_history,
    read_history,
    reader_process,
    reap,
    start_client,
    stop_with_signal,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from _minechat.history import lock_path_for
from chat_io import AlreadyRunning


@pytest.mark.skipif(sys.platform == "win32", reason="flock semantics")
def test_second_history_file_on_one_path_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    first = open_history(path)
    try:
        second = make_history(path)
        with pytest.raises(AlreadyRunning) as caught:
            second.open(str(path))
        assert str(caught.value) == (
            f"{path} is already being written by another read_client (process {os.getpid()}); "
            "stop that one, or give this one another --log_path"
        )
        assert (tmp_path / ".chat.log.read_client.lock").read_text() == f"{os.getpid()}\n"
    finally:
        first.close()
    second.open(str(path))  # the lock went with the first
    second.close()


def test_lock_holder_that_is_not_a_number_is_unknown(tmp_path: Path) -> None:
    # The holder is now None when unknown (it was "?"), and already_running() then names no process.
    path = tmp_path / "lock"
    for content, holder in ((b"garbage\n", None), (b"\xff\xfe12\n", None), (b"", None), (b" 4321 \n", "4321")):
        path.write_bytes(content)
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.lseek(descriptor, 0, os.SEEK_END)  # read_holder reads from the start, wherever the file is
            assert _minechat.history.read_holder(descriptor) == holder
        finally:
            os.close(descriptor)
    assert _minechat.history.read_holder(descriptor) is None  # closed: an OSError
    assert _minechat.history.read_holder(None) is None
    assert str(_minechat.history.already_running(path, None)) == (
        f"{path} is already being written by another read_client; stop that one, or give this one another --log_path"
    )


@SYMLINKS
def test_lock_is_next_to_the_real_file(tmp_path: Path) -> None:
    # The lock file is now hidden and named for read_client: .NAME.read_client.lock beside the real file.
    (tmp_path / "real").mkdir()
    (tmp_path / "link.log").symlink_to(tmp_path / "real" / "chat.log")
    expected = tmp_path / "real" / ".chat.log.read_client.lock"
    assert _minechat.history.lock_path_for(tmp_path / "link.log") == expected
    assert _minechat.history.HistoryPattern(tmp_path / "link.log").lock_path() == expected


@POSIX_ONLY
def test_lock_file_is_owner_only(tmp_path: Path) -> None:
    history = open_history(tmp_path / "chat.log")
    history.close()
    assert stat.S_IMODE((tmp_path / ".chat.log.read_client.lock").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "chat.log").stat().st_mode) == 0o600


@pytest.mark.slow
@POSIX_ONLY
async def test_second_reader_on_one_history_is_refused(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    async with reader_process(
        server,
        history,
        stdout=subprocess.DEVNULL,
    ) as first:
        try:
            # The same file by another name.
            (tmp_path / "sub").mkdir()
            second = await start_client(
                "read_client.py",
                "--log_path",
                str(tmp_path / "sub" / ".." / "chat.log"),
                port=server.read_port,
                cwd=tmp_path / "sub" / "..",
            )
            code, err = await finish(second)
            assert code == 7
            assert len(err.strip().splitlines()) == 1
            assert "chat.log" in err and str(first.pid) in err
            assert "Traceback" not in err
            assert server.reader_connections == 1
            # A crash releases the lock.
            first.kill()
            await first.wait()
            async with reader_process(server, history, stdout=subprocess.DEVNULL) as third:
                assert server.reader_connections == 2
                assert await stop_with_signal(third, signal.SIGINT) == -signal.SIGINT
        finally:
            await reap(first)
    lines = read_history(history)
    assert sum(line.endswith("*** connected to 127.0.0.1:" + str(server.read_port)) for line in lines) == 2


@pytest.mark.slow
@POSIX_ONLY
async def test_hard_link_to_the_history_gets_no_second_reader(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    async with reader_process(
        server,
        history,
        stdout=subprocess.DEVNULL,
    ) as first:
        try:
            os.link(history, tmp_path / "same.log")
            second = await start_client(
                "read_client.py",
                "--log_path",
                str(tmp_path / "same.log"),
                port=server.read_port,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
            )
            # Refused, it exits at once; let in, it would run until finish() kills it.
            code, err = await finish(second)
        finally:
            await stop_with_signal(first, signal.SIGINT)
    assert "same.log is already being written by another read_client;" in err
    assert code == 7


def test_a_file_named_like_the_lock_is_not_overwritten(tmp_path: Path) -> None:
    # --log_path poetry, in a project folder: poetry.lock belongs to another tool.
    precious = tmp_path / "poetry.lock"
    precious.write_text("[[package]]\nname = 'aiofiles'\n", encoding="utf-8")
    with client_process_sync(
        "read_client.py",
        "--log_path",
        "poetry",
        port=9,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        # The first note is written after the history is opened and locked.
        deadline = time.monotonic() + START_WAIT
        history = tmp_path / "poetry"
        while not (history.exists() and b"*** connecting" in history.read_bytes()) and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=STOP_WAIT)
    assert precious.read_text(encoding="utf-8") == "[[package]]\nname = 'aiofiles'\n"


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
