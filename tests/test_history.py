"""The reader's history file: owner-only, appended, followed across rotations, and its errors."""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import POSIX_ONLY, StartReader, chat_of, read_history, read_main, status_of


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
