"""After start-up no trouble with the history ends the reader: a pause, the line in hand kept, resumed once fixed."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    WAIT,
    FakeTime,
    StartReader,
    chat_of,
    fill_disk,
    make_history,
    numbered,
    numbers_of,
    read_history,
    running_reader,
    stop,
    wait_for_file,
    wait_for_log,
)

from _minechat.history import DiskFull, lock_path_for
from chat_io import lock_file

LINES = 5  # numbered lines per step


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_folder(path: Path) -> None:
    path.mkdir()


def make_link_to_a_locked_file(path: Path) -> None:
    other = path.with_name("other.log")  # another reader's history: its lock file is held
    other.touch()
    path.symlink_to(other)


@POSIX_ONLY
@pytest.mark.parametrize("trouble", [make_fifo, make_folder, make_link_to_a_locked_file])
async def test_history_replaced_by_what_cannot_take_it_is_a_pause(
    server: FakeMinechatServer,
    tmp_path: Path,
    trouble: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "chat.log"
    holder = None
    async with running_reader(server, path, backlog=0) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, LINES))
        await reader.out.wait_for(lambda text: f"Bob: {LINES:07d}" in text)
        os.unlink(path)
        trouble(path)
        if trouble is make_link_to_a_locked_file:  # another reader holds it, as the first reader holds ours
            holder = os.open(tmp_path / "other.log", os.O_RDWR)
            assert lock_file(holder, wait=False)
        await server.broadcast(numbered(LINES + 1, LINES))
        await wait_for_log(caplog, lambda message: "cannot" in message)  # the reader has tried the path
        await asyncio.sleep(0.5)  # and tries it again, saying nothing more
        assert not reader.task.done()
        if holder is not None:
            os.close(holder)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            os.unlink(path)
        await server.broadcast(numbered(2 * LINES + 1, LINES))
        await reader.out.wait_for(lambda text: f"Bob: {3 * LINES:07d}" in text)
        deadline = asyncio.get_running_loop().time() + WAIT
        while numbers_of(chat_of(read_history(path) if path.is_file() else [])) != list(
            range(LINES + 1, 3 * LINES + 1)
        ):
            assert asyncio.get_running_loop().time() < deadline, read_history(path)
            await asyncio.sleep(0.05)
    said = [record for record in caplog.records if record.levelno >= logging.WARNING and "cannot" in record.message]
    assert len(said) == 1, [record.message for record in said]


async def test_a_history_deleted_to_make_room_on_a_full_disk_is_followed(
    server: FakeMinechatServer, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tiny_disk / "chat.log"
    first, held = 700, 300  # about 31 KB, then 13 KB that a full disk holds back
    async with running_reader(server, path, backlog=0) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, first))
        await wait_for_file(path, lambda data: f"Bob: {first:07d} ".encode() in data)
        fill_disk(tiny_disk)
        await server.broadcast(numbered(first + 1, held))
        deadline = asyncio.get_running_loop().time() + WAIT
        while not any("the disk is full" in record.getMessage() for record in caplog.records):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        before = read_history(path)  # what the full disk took, kept aside: the user deletes it to make room
        path.unlink()
        last = first + held + 1
        await server.broadcast(numbered(last, 1))
        await wait_for_file(path, lambda data: f"Bob: {last:07d} ".encode() in data)
        assert not reader.task.done()
    after = read_history(path)
    # The line the full disk cut is written whole into the new file: seen in both, lost in neither.
    numbers = numbers_of(chat_of(before)) + numbers_of(chat_of(after))
    assert sorted(set(numbers)) == list(range(1, last + 1))
    assert len(numbers) - len(set(numbers)) <= 1


async def test_a_first_start_on_a_full_disk_is_a_pause(
    server: FakeMinechatServer, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filler = fill_disk(tiny_disk)
    path = tiny_disk / "chat.log"
    async with running_reader(server, path, backlog=0) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, 3))
        # Held, the history first: nothing is shown until it is written.
        await wait_for_log(caplog, lambda message: "the disk is full" in message)
        assert not reader.task.done()
        filler.unlink()
        await wait_for_file(path, lambda data: b"Bob: 0000003 " in data)
    assert numbers_of(chat_of(read_history(path))) == [1, 2, 3]


def test_an_empty_or_stale_lock_file_never_blocks_a_start(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    lock = lock_path_for(path)
    for content in (b"", b"999999999\n", b"not a pid"):
        lock.write_bytes(content)
        history = make_history(path)
        history.open(str(path))
        history.close()
        assert lock.read_text() == f"{os.getpid()}\n"


@pytest.mark.skipif(not hasattr(errno, "EDQUOT"), reason="no disk quotas here")
def test_a_quota_error_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chat.log"
    history = make_history(path)
    history.open(str(path))
    real_write = os.write

    def over_quota(descriptor: int, data: bytes) -> int:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "write", over_quota)
    with pytest.raises(DiskFull) as stalled:
        history.write([(str(path), "[27.11.26 10:00] Bob: one\n")])
    assert stalled.value.no_space
    monkeypatch.setattr(os, "write", real_write)
    history.write(stalled.value.unwritten)
    history.close()
    assert read_history(path) == ["[27.11.26 10:00] Bob: one"]


async def test_a_deleted_folder_of_a_dated_history_is_made_again(server: FakeMinechatServer, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    async with running_reader(server, folder / "%Y" / "chat.log", backlog=0) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, LINES))
        await reader.out.wait_for(lambda text: f"Bob: {LINES:07d}" in text)
        [year] = [entry for entry in folder.iterdir() if entry.is_dir()]
        shutil.rmtree(folder)  # the whole tree, as `rm -rf logs` would
        await server.broadcast(numbered(LINES + 1, LINES))
        path = year / "chat.log"
        deadline = asyncio.get_running_loop().time() + WAIT
        while not (path.is_file() and f"Bob: {2 * LINES:07d} ".encode() in path.read_bytes()):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert not reader.task.done()
    assert numbers_of(chat_of(read_history(path))) == list(range(LINES + 1, 2 * LINES + 1))


async def test_a_disk_that_fills_across_midnight_loses_none_of_the_new_days_lines(
    server: FakeMinechatServer, start_reader: StartReader, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    midnight = datetime(2026, 2, 1).timestamp()
    now = FakeTime(midnight - 5)
    reader = await start_reader(log_path=tiny_disk / "%d.log", now=now, backlog=0)
    try:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, 100))
        old_file, new_file = tiny_disk / "31.log", tiny_disk / "01.log"
        await wait_for_file(old_file, lambda data: b"Bob: 0000100 " in data, WAIT)
        filler = fill_disk(tiny_disk)
        await server.broadcast(numbered(101, 200))  # the old day's, held by the full disk
        deadline = asyncio.get_running_loop().time() + WAIT
        while not any("the disk is full" in record.getMessage() for record in caplog.records):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        now.value = midnight + 1
        await server.broadcast(numbered(301, 200))  # the new day's, while the disk is still full
        await asyncio.sleep(0.3)
        filler.unlink()
        await server.broadcast(numbered(501, 1))
        deadline = asyncio.get_running_loop().time() + WAIT
        while not any(b"Bob: 0000501 " in path.read_bytes() for path in (old_file, new_file) if path.exists()):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        await stop(reader)
    old = numbers_of(chat_of(read_history(old_file)))
    new = numbers_of(chat_of(read_history(new_file))) if new_file.exists() else []
    assert sorted(old + new) == list(range(1, 502))
    assert old == sorted(old) and new == sorted(new)
