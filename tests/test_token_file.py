"""The token file: read what an editor saved, write through symlinks, refuse odd files, prove there is room."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    LINUX_ONLY,
    POSIX_ONLY,
    SYMLINKS,
    TOKEN,
    RecordingDelays,
    free_port,
    run_sender_process,
    send_to_end,
    settings_for,
)

import _minechat.token_file
import chat_io
import send_client
from _minechat.token_file import check_token_path, load_token, save_token
from chat_io import EXIT_FILE, FileError


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n",  # Windows Notepad: UTF-8 with a byte-order mark
        b"  " + TOKEN.encode() + b" \n\n",
        b"\xef\xbb\xbf\t" + TOKEN.encode(),
    ],
)
def test_token_file_bom_and_whitespace_are_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "token.txt").write_bytes(content)
    assert load_token(tmp_path / "token.txt") == TOKEN
    settings = send_client.parse_settings(["--token_path", str(tmp_path / "token.txt")], {}, tmp_path)
    assert settings.token == TOKEN


@SYMLINKS
@pytest.mark.parametrize("target_exists", [False, True])
def test_save_token_writes_through_a_symlink(tmp_path: Path, target_exists: bool) -> None:
    target = tmp_path / "elsewhere" / "minechat.token"
    target.parent.mkdir()
    if target_exists:
        target.write_text("\n")  # there, but holding no token (a token there would be kept: see below)
    link = tmp_path / "token.txt"
    link.symlink_to(target)
    save_token(link, TOKEN)
    assert link.is_symlink()
    assert target.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["elsewhere", "token.txt"]
    assert sorted(path.name for path in target.parent.iterdir()) == ["minechat.token"]


def test_save_token_never_replaces_another_token(tmp_path: Path) -> None:
    # Registering only happens when no token was found; one there now was saved meanwhile.
    path = tmp_path / "token.txt"
    path.write_text("saved-meanwhile\n")
    with pytest.raises(FileError, match="holds another token now"):
        save_token(path, TOKEN)
    assert path.read_text() == "saved-meanwhile\n"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["token.txt"]


def test_check_token_path_finds_a_full_disk(tiny_disk: Path) -> None:
    descriptor = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)
    # An empty file still fits on a full disk; a token does not.
    with pytest.raises(FileError, match="No space left on device; choose another --token_path"):
        check_token_path(tiny_disk / "token.txt")
    assert sorted(path.name for path in tiny_disk.iterdir()) == ["filler"]


def test_check_token_path_leaves_nothing_behind(tmp_path: Path) -> None:
    check_token_path(tmp_path / "token.txt")
    assert list(tmp_path.iterdir()) == []


def test_token_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "token.txt"
    assert load_token(path) is None
    path.write_text("\n")  # an empty file, as `touch` leaves it (a token there would be kept)
    path.chmod(0o644)
    save_token(path, "new-token")
    assert path.read_text() == "new-token\n"
    assert load_token(path) == "new-token"
    assert [p.name for p in tmp_path.iterdir()] == ["token.txt"]
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_token_file_errors_are_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="cannot save the token"):
        save_token(tmp_path / "missing" / "token.txt", "t")
    with pytest.raises(FileError, match="choose another --token_path"):
        check_token_path(tmp_path / "missing" / "token.txt")
    with pytest.raises(FileError, match="cannot read the token file"):
        load_token(tmp_path)


def test_unreadable_token_file_says_why(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(chat_io.FileError, match=r"^cannot read the token file .*token\.txt: 'utf-8' codec can't"):
        _minechat.token_file.load_token(tmp_path / "token.txt")


@pytest.mark.parametrize("function", [_minechat.token_file.save_token, _minechat.token_file.check_token_path])
def test_temporary_token_files_are_hidden_siblings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: object
) -> None:
    made: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(**options: str) -> tuple[int, str]:
        descriptor, name = real_mkstemp(**options)
        made.append(name)
        return descriptor, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    args = (tmp_path / "token.txt", "t") if function is _minechat.token_file.save_token else (tmp_path / "token.txt",)
    function(*args)  # type: ignore[operator]
    [name] = made
    assert Path(name).parent == tmp_path
    assert Path(name).name.startswith(".token.txt.") and name.endswith(".tmp")


async def test_unusable_token_path_is_found_before_connecting(server: FakeMinechatServer, tmp_path: Path) -> None:
    settings = settings_for(
        server, tmp_path, "--token_path", str(tmp_path / "missing" / "token.txt"), "--nickname", "Eve"
    )
    with pytest.raises(FileError, match=r"^cannot save a token in .*; choose another --token_path$"):
        await send_to_end(settings, None, RecordingDelays())
    assert server.send_transcripts == [] and server.registrations == []


@POSIX_ONLY
async def test_token_path_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "token.txt")
    # A FIFO nobody writes to would block an open() for ever: RUN_WAIT tells a refusal from that.
    code, _, err = await run_sender_process(free_port(), tmp_path, "--message", "hi", stdin=None)
    assert code == EXIT_FILE, err


@LINUX_ONLY
async def test_token_path_that_is_a_device_is_refused_without_a_traceback(tmp_path: Path) -> None:
    code, _, err = await run_sender_process(
        free_port(),
        tmp_path,
        "--token_path",
        "/dev/zero",
        "--message",
        "hi",
        stdin=None,
        shell_prefix="ulimit -v 1048576;",
    )
    assert "Traceback" not in err, err
    assert code == EXIT_FILE, err


OTHER_USER = 1000  # any uid but ours: as root, the tests can hand files to it


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to plant another user's files")
@pytest.mark.parametrize("planted", ["link", "link to our file", "file"])
def test_the_token_is_never_written_into_another_users_file_or_link(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("")  # the other user's own empty file, which a link would make us fill
    os.chown(victim, OTHER_USER, OTHER_USER)
    path = tmp_path / "token.txt"
    if planted == "file":
        path.write_text("")
        os.chown(path, OTHER_USER, OTHER_USER)
    else:
        ours = tmp_path / "ours.txt"
        path.symlink_to(ours if planted == "link to our file" else victim)
        os.lchown(path, OTHER_USER, OTHER_USER)
    with pytest.raises(chat_io.FileError, match="another user"):
        check_token_path(path)
    with pytest.raises(chat_io.FileError, match="another user"):
        save_token(path, TOKEN)
    assert victim.read_text() == "" and (not path.exists() or path.read_text() == "")


@SYMLINKS
def test_a_fifo_at_the_token_path_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(chat_io.FileError, match="not a regular file"):
        save_token(fifo, TOKEN)
