"""A quiet chat: the reader replaces a connection quiet for the idle timeout make-before-break, losing nothing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import WAIT, chat_of, read_history, running_reader, status_of

IDLE = 0.2  # seconds of quiet after which a test reader replaces its connection


def numbers_in(chat: list[str]) -> list[int]:
    return [int(match.group(1)) for line in chat if (match := re.match(r"Server: (\d+) a reader", line))]


@pytest.mark.slow
async def test_idle_switches_lose_and_double_nothing(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.announce_readers = True  # a numbered line as each connection opens and as each one closes
    switches = 50
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=IDLE) as reader:
        await server.wait_until(lambda: server.reader_connections > switches, timeout=switches * IDLE * 4 + WAIT)
        await server.wait_until(lambda: len(server.readers) == 1)
        last = server.announced
        await reader.out.wait_for(lambda text: f"Server: {last} a reader" in text)
    history = read_history(reader.path)
    numbers = numbers_in(chat_of(history))
    # A closed connection's line may be broadcast after `last` was read (it is spawned): it counts too.
    assert max(numbers) >= last
    assert sorted(numbers) == list(range(1, max(numbers) + 1))  # none lost, none twice
    assert not [line for line in status_of(history) if "lost" in line or "connecting" in line][1:]


async def test_a_quiet_chat_never_grows_the_wait(server: FakeMinechatServer, tmp_path: Path) -> None:
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=0.1) as reader:
        await server.wait_until(lambda: server.reader_connections >= 4, timeout=WAIT)
    assert reader.delays.taken == []  # never a wait: the connection was replaced before it was let go


@pytest.mark.slow
async def test_a_line_during_the_switch_is_recorded_once(server: FakeMinechatServer, tmp_path: Path) -> None:
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=IDLE) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)  # on a busy machine line 1 came before it did
        for number in range(1, 25):
            await asyncio.sleep(IDLE * 0.6 * (number % 4))  # some lines fall into switches, some do not
            await server.broadcast(f"Bob: line {number}\n".encode())
        await reader.out.wait_for(lambda text: "Bob: line 24" in text)
        assert server.reader_connections > 1
    chat = chat_of(read_history(reader.path))
    assert chat == [f"Bob: line {number}" for number in range(1, 25)]


@pytest.mark.slow
async def test_a_busy_connection_older_than_the_idle_timeout_is_kept(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=IDLE) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        for number in range(1, 16):  # a line every third of the timeout, for five timeouts
            await server.broadcast(f"Bob: line {number}\n".encode())
            await asyncio.sleep(IDLE / 3)
        await reader.out.wait_for(lambda text: "Bob: line 15" in text)
        assert server.reader_connections == 1
