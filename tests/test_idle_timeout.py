"""read_client and a server that goes silent while keeping the connection open: --idle-timeout."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import WAIT, chat_of, read_history, run_client_sync, running_reader, status_of, wait_for_file

import read_client

IDLE = 0.5  # seconds of silence a test reader takes for a dead connection


async def test_silent_connection_is_dropped_and_reconnected(server: FakeMinechatServer, tmp_path: Path) -> None:
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=IDLE) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"Bob: before\n")
        await reader.out.wait_for(lambda text: "Bob: before" in text)
        server.go_silent()  # the connection stays open, but nothing more comes over it
        await server.wait_until(lambda: server.reader_connections == 2 and len(server.readers) == 1)
        await server.broadcast(b"Bob: after\n")
        await reader.out.wait_for(lambda text: "Bob: after" in text)
        assert server.silenced_connections_closed == 1  # the reader hung up the silent one
    history = read_history(reader.path)
    assert chat_of(history) == ["Bob: before", "Bob: after"]
    # Replaced make-before-break while nothing was said: no gap, so no note of one.
    assert [line for line in status_of(history) if "lost" in line or "connecting" in line] == [
        f"*** connecting to 127.0.0.1:{server.read_port}"
    ]


@pytest.mark.slow
async def test_silent_connection_is_left_within_the_idle_timeout_and_a_quarter(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    idle = 1.0
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=idle):
        await server.wait_until(lambda: len(server.readers) == 1)
        loop = asyncio.get_running_loop()
        silent_since = loop.time()
        server.go_silent()
        await server.wait_until(lambda: server.silenced_connections_closed == 1, timeout=WAIT)
        took = loop.time() - silent_since
    # Looked at four times per timeout, replaced once a new connection settles: well within twice the timeout.
    assert idle <= took < idle * 1.25 + 0.4, took


@pytest.mark.slow
async def test_idle_timeout_zero_keeps_a_silent_connection(server: FakeMinechatServer, tmp_path: Path) -> None:
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=0) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        server.go_silent()
        with suppress(asyncio.TimeoutError):
            await server.wait_until(lambda: server.reader_connections > 1, timeout=IDLE * 2)
        assert server.reader_connections == 1
        assert not reader.task.done()


async def test_silent_server_is_not_hammered(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.silent_readers = True  # accepts every connection and never says a thing
    idle = 0.1
    async with running_reader(server, tmp_path / "chat.log", idle_timeout=idle) as reader:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.wait_until(lambda: server.reader_connections >= 4)
        await asyncio.sleep(idle * 3)
        # A quiet chat is no failure: each connection is replaced once it was quiet for the timeout, no sooner.
        assert server.reader_connections <= (loop.time() - started) / idle + 1
        assert reader.delays.taken == []


async def test_silent_connection_is_a_lost_event_in_json_lines(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.announce_readers = True  # the new connection gets a line the silenced one never does: a real loss
    async with running_reader(server, tmp_path / "chat.jsonl", idle_timeout=IDLE, history_format="jsonl") as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        server.go_silent()
        await server.wait_until(lambda: server.reader_connections == 2)
        await wait_for_file(reader.path, lambda data: data.count(b'"event": "connected"') == 2, timeout=WAIT)
        await wait_for_file(reader.path, lambda data: b'"3 a reader closed"' in data, timeout=WAIT)
    records = [json.loads(line) for line in reader.path.read_text(encoding="utf-8").splitlines()]
    lost = [record for record in records if record.get("event") == "lost"]
    assert len(lost) == 1
    assert lost[0]["error"] == f"nothing received for {IDLE:g} s"
    assert lost[0]["text"] == f"connection lost: nothing received for {IDLE:g} s"
    chat = [record["text"] for record in records if "event" not in record]
    assert chat[:3] == ["1 a reader connected", "2 a reader connected", "3 a reader closed"]


def test_help_names_the_idle_timeout() -> None:
    result = run_client_sync("read_client.py", "--help")
    assert result.returncode == 0
    assert "--idle-timeout" in result.stdout and "IDLE_TIMEOUT" in result.stdout


def test_idle_timeout_comes_from_the_environment(tmp_path: Path) -> None:
    settings = read_client.parse_settings([], {"MINECHAT_IDLE_TIMEOUT": "2.5"}, tmp_path)
    assert settings.idle_timeout == 2.5
    assert read_client.parse_settings([], {}, tmp_path).idle_timeout == 60
    assert read_client.parse_settings(["--idle-timeout", "0"], {}, tmp_path).idle_timeout == 0


def test_negative_idle_timeout_is_refused(tmp_path: Path) -> None:
    result = run_client_sync("read_client.py", "--idle-timeout", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "--idle-timeout" in result.stderr
    assert not list(tmp_path.iterdir())
