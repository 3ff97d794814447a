"""One reader per history: the lock next to the real file, who holds it, and files that only look like it."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from helpers import make_history, open_history

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
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


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_lock_is_next_to_the_real_file(tmp_path: Path) -> None:
    # The lock file is now hidden and named for read_client: .NAME.read_client.lock beside the real file.
    (tmp_path / "real").mkdir()
    (tmp_path / "link.log").symlink_to(tmp_path / "real" / "chat.log")
    expected = tmp_path / "real" / ".chat.log.read_client.lock"
    assert _minechat.history.lock_path_for(tmp_path / "link.log") == expected
    assert _minechat.history.HistoryPattern(tmp_path / "link.log").lock_path() == expected


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_lock_file_is_owner_only(tmp_path: Path) -> None:
    history = open_history(tmp_path / "chat.log")
    history.close()
    assert stat.S_IMODE((tmp_path / ".chat.log.read_client.lock").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "chat.log").stat().st_mode) == 0o600
