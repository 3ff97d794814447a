"""The reader's history file: owner-only, appended, followed across rotations, and its errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    FIXED_STAMP,
    FORGED_IN_LONG_LINE,
    POSIX_ONLY,
    REFUSAL_WAIT,
    STAMP,
    StartReader,
    chat_of,
    client_process_sync,
    make_history,
    open_history,
    read_history,
    read_main,
    reader_process,
    running_reader,
    status_of,
    stop_with_signal,
    wait_for_file,
)

from _minechat.history import DiskFull
from chat_io import MAX_LINE_BYTES, FileError


@POSIX_ONLY
async def test_new_history_file_is_owner_only(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    assert stat.S_IMODE(reader.path.stat().st_mode) == 0o600


async def test_history_is_appended_not_truncated(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    path = tmp_path / "chat.log"
    path.write_text("[01.01.26 00:00] Old: line\n", encoding="utf-8")
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"New: line\n")
    await reader.out.wait_for(lambda text: "New: line\n" in text)
    assert chat_of(read_history(path)) == ["Old: line", "New: line"]


@pytest.mark.parametrize("how", ["rename", "delete"])
async def test_follows_history_file_after_rotation(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path, how: str
) -> None:
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"A: before\n")
    await reader.out.wait_for_lines(1)
    rotated = tmp_path / "chat.log.1"
    if how == "rename":
        reader.path.rename(rotated)
    else:
        reader.path.unlink()
    await server.broadcast(b"A: after\n")
    await reader.out.wait_for_lines(2)
    fresh = read_history(reader.path)
    assert chat_of(fresh) == ["A: after"]
    assert "was moved or deleted" in status_of(fresh)[0]
    if how == "rename":
        assert chat_of(read_history(rotated)) == ["A: before"]
    if sys.platform != "win32":
        assert stat.S_IMODE(reader.path.stat().st_mode) == 0o600


@pytest.mark.parametrize("where", ["missing/dir/chat.log", "."])
def test_unusable_history_path_fails_before_connecting(
    tmp_path: Path,
    silent_listener: socket.socket,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    port = silent_listener.getsockname()[1]
    code, err = read_main(["--host", "127.0.0.1", "--port", str(port), "--log_path", str(tmp_path / where)], capsys)
    assert code == 6
    assert "cannot open history file" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    with pytest.raises(BlockingIOError):
        silent_listener.accept()


@POSIX_ONLY
def test_unwritable_history_file_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = read_main(["--log_path", str(locked / "chat.log")], capsys)
    assert code == 6
    assert "Permission denied" in err


@pytest.mark.parametrize("relative", ["missing/chat.log", "chat.log"])
def test_messages_name_files_with_their_full_path(
    relative: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if relative == "chat.log":
        (tmp_path / relative).mkdir()
    code, err = read_main(["--host", "127.0.0.1", "--port", "1", "--log_path", relative], capsys)
    assert code == 6
    assert f"cannot open history file {Path.cwd() / relative}: " in err


def test_history_write_adds_text_whole_after_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(b"old")
    history = open_history(path)
    try:
        history.write([(str(path), "a\n")])
        history.write([(str(path), "b\n")])
    finally:
        history.close()
    history.close()  # closing twice is harmless
    assert path.read_bytes() == b"old\na\nb\n"


def test_history_moved_away_continues_in_a_new_file_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.log"
    history = open_history(path)
    try:
        history.write([(str(path), "a\n")])
        path.rename(tmp_path / "chat.log.1")
        history.write([(str(path), "b\n")])
    finally:
        history.close()
    assert (tmp_path / "chat.log.1").read_bytes() == b"a\n"
    assert path.read_bytes() == (
        f"{FIXED_STAMP} *** history continues here; the earlier file was moved or deleted\nb\n".encode()
    )
    assert [record.getMessage() for record in caplog.records] == [
        f"history file {path} was moved or deleted; continuing in a new one"
    ]


def test_one_byte_history_without_newline_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(b"x")
    history = open_history(path)
    try:
        history.write([(str(path), "a\n")])
    finally:
        history.close()
    assert path.read_bytes() == b"x\na\n"


def test_full_disk_while_writing_the_history_is_a_pause(tiny_disk: Path) -> None:
    path = tiny_disk / "chat.log"
    history = open_history(path)
    try:
        with pytest.raises(DiskFull) as caught:
            history.write([(str(path), "x" * 1024 * 1024)])
    finally:
        history.close()
    assert caught.value.unwritten == []  # the one entry was begun: its rest is kept by the history


def test_unusable_history_path_says_why(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "chat.log"
    history = make_history(path)
    with pytest.raises(FileError) as caught:
        history.open(str(path))
    assert str(caught.value) == (
        f"cannot open history file {path}: No such file or directory; choose another --log_path"
    )
    assert not (tmp_path / "missing").exists()  # an undated history makes no folders


@POSIX_ONLY
def test_fifo_as_history_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "chat.fifo"
    os.mkfifo(fifo)
    with client_process_sync(
        "read_client.py",
        "--log_path",
        str(fifo),
        port=9,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _, stderr = process.communicate(timeout=REFUSAL_WAIT)  # a start-up, then a refusal
    assert process.returncode == 6
    assert "not a regular file" in stderr
    assert str(fifo) in stderr
    assert len(stderr.strip().splitlines()) == 1


async def test_history_without_final_newline_gets_one(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(b"[01.01.26 00:00] A: cut off by a full disk")
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"A: next\n")
        await reader.out.wait_for(lambda text: "A: next\n" in text)
    history = read_history(path)
    assert history[0] == "[01.01.26 00:00] A: cut off by a full disk"
    assert all(re.match(STAMP, line) for line in history[1:])
    assert chat_of(history) == ["A: cut off by a full disk", "A: next"]


@pytest.mark.parametrize("how", ["rename", "delete"])
async def test_rotation_inside_a_long_line_forges_no_line(server: FakeMinechatServer, tmp_path: Path, how: str) -> None:
    history = tmp_path / "chat.log"
    async with reader_process(
        server,
        history,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
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
