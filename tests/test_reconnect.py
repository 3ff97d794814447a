"""Reconnecting: the backoff delays; the reader back after drops, resets and refusals without losing a line."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    FLOOD_WAIT,
    LINUX_ONLY,
    WAIT,
    RecordingOut,
    StartReader,
    chat_of,
    free_port,
    numbered,
    numbers_of,
    read_history,
    running_reader,
    status_of,
    wait_for_file,
)

import read_client
from chat_io import backoff
from read_client import ReaderSettings


def test_backoff_grows_to_cap_without_jitter() -> None:
    delays = backoff(initial=0.5, factor=2, cap=4, jitter=0)
    assert [next(delays) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_backoff_jitter_only_shortens() -> None:
    delays = backoff(initial=1, factor=2, cap=60, jitter=0.25, rng=random.Random(7))
    taken = [next(delays) for _ in range(10)]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert all(0.75 * ceiling <= delay <= ceiling for delay, ceiling in zip(taken, ceilings, strict=True))
    assert len(set(taken[-4:])) == 4


async def test_reconnects_after_drop_mid_line_losing_nothing(
    server: FakeMinechatServer, start_reader: StartReader
) -> None:
    server.split_writes = True
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"A: one\nA: tw")
    await reader.out.wait_for_lines(1)
    await server.wait_until(lambda: server.reader_connections == 1)
    await server.drop_readers()
    # The unfinished line is kept when the connection ends.
    await reader.out.wait_for_lines(2)
    await server.wait_until(lambda: len(server.readers) == 1 and server.reader_connections == 2)
    await server.broadcast(b"A: three\n")
    await reader.out.wait_for_lines(3)
    history = read_history(reader.path)
    assert chat_of(history) == ["A: one", "A: tw", "A: three"]
    statuses = status_of(history)
    assert statuses[2].startswith("*** connection lost: ")
    assert statuses[2].endswith(" s")
    assert statuses[3:] == [
        f"*** connecting to 127.0.0.1:{server.read_port}",
        f"*** connected to 127.0.0.1:{server.read_port}",
    ]
    # The first connection delivered data, so backoff started over.
    assert reader.delays.resets == 2


async def test_retries_refused_connection_until_server_comes(start_reader: StartReader) -> None:
    port = free_port()
    reader = await start_reader(port=port)
    await reader.delays.wait_for_taken(3)
    async with FakeMinechatServer(read_port=port) as late:
        await late.wait_until(lambda: len(late.readers) == 1)
        await late.broadcast(b"Late: hello\n")
        await reader.out.wait_for_lines(1)
        reader.task.cancel()
        with suppress(asyncio.CancelledError):
            await reader.task
    history = read_history(reader.path)
    assert chat_of(history) == ["Late: hello"]
    refusals = [line for line in status_of(history) if line.startswith("*** cannot connect to 127.0.0.1")]
    assert len(refusals) >= 3
    assert all(line.endswith(" s") and "next try in" in line for line in refusals)


async def test_accept_then_close_backs_off_without_reset(server: FakeMinechatServer, start_reader: StartReader) -> None:
    server.close_readers_at_once = True
    reader = await start_reader()
    await reader.delays.wait_for_taken(6)
    await server.wait_until(lambda: server.reader_connections >= 6)
    assert reader.delays.resets == 1
    assert reader.delays.taken[:6] == [0.002, 0.004, 0.008, 0.016, 0.032, 0.05]
    await wait_for_file(reader.path, lambda data: b"connection lost" in data)  # the journal writes notes soon after
    assert any("connection lost: the server closed the connection" in line for line in read_history(reader.path))


@LINUX_ONLY
async def test_a_reset_mid_read_is_retried(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"A: before\nA: unfinish")
        await server.reset_readers(wait_acked=True)
        await server.wait_until(lambda: len(server.readers) == 1 and server.reader_connections == 2)
        await server.broadcast(b"A: after\n")
        await reader.out.wait_for_lines(3)
    assert chat_of(read_history(path)) == ["A: before", "A: unfinish", "A: after"]
    assert reader.delays.resets == 2  # the first connection delivered a whole line: backoff starts over
    lost = [line for line in status_of(read_history(path)) if line.startswith("*** connection lost")]
    assert lost == ["*** connection lost: Connection reset by peer; next try in 0.0 s"]


async def test_backoff_delay_is_really_waited(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.close_readers_at_once = True
    settings = ReaderSettings("127.0.0.1", server.read_port, tmp_path / "chat.log", WAIT, verbose=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.ensure_future(read_client.run(settings, RecordingOut(), lambda: itertools.repeat(0.2)))
    try:
        await server.wait_until(lambda: server.reader_connections >= 3, timeout=WAIT)
        assert loop.time() - started >= 0.4
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert status_of(read_history(settings.log_path))[2] == (
        "*** connection lost: the server closed the connection; next try in 0.2 s"
    )


async def test_connection_events_are_logged_at_their_levels(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="read_client")
    server.close_readers_at_once = True
    async with running_reader(server, tmp_path / "chat.log") as reader:
        await reader.delays.wait_for_taken(1)
    address = f"127.0.0.1:{server.read_port}"
    assert [(record.levelno, record.getMessage()) for record in caplog.records][:3] == [
        (logging.INFO, f"connecting to {address}"),
        (logging.INFO, f"connected to {address}"),
        (logging.WARNING, "connection lost: the server closed the connection; next try in 0.0 s"),
    ]


@LINUX_ONLY
async def test_reset_keeps_every_line_that_reached_the_machine(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    count = 60_000
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(numbered(1, count))
        # The client's kernel has acknowledged every byte, so all of it reached this machine.
        await server.reset_readers(wait_acked=True)
        await reader.delays.wait_for_taken(1, timeout=FLOOD_WAIT)
    history = read_history(path)
    assert numbers_of(chat_of(history)) == list(range(1, count + 1))
    assert any(line.startswith("*** connection lost: ") for line in status_of(history))


async def test_one_byte_then_close_keeps_backing_off(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.send_then_close = b"x"
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await reader.delays.wait_for_taken(6)
        await server.wait_until(lambda: server.reader_connections >= 6)
    # A connection that delivered no complete line does not count as working: no reset.
    assert reader.delays.resets == 1
    assert reader.delays.taken[:6] == [0.002, 0.004, 0.008, 0.016, 0.032, 0.05]
    # The byte each one sent was received, so it is recorded.
    assert chat_of(read_history(path))[:5] == ["x"] * 5


async def test_backoff_resets_after_a_complete_line(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.send_then_close = b"A: whole\n"
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await reader.delays.wait_for_taken(4)
    assert reader.delays.resets >= 4
    assert set(reader.delays.taken[:4]) == {0.002}
