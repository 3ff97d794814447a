"""What the person at the sender sees: confirmations on a terminal, hints that can be right, the documented codes."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, RecordingDelays
from fake_server import FakeMinechatServer
from send_support import TOKEN

import send_client
from chat_io import (
    DEFAULT_SEND_PORT,
    ProtocolError,
    ReplyTimeout,
)

HINT = "is this the reading port?"


# --- the reading-port hint, only where it can be right ----------------------------------------


@pytest.fixture
def posting_port_listener() -> Iterator[socket.socket]:
    """A listener on 127.0.0.1:5050 itself, the posting port, which accepts and never greets."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do: TIME_WAIT is no owner
    try:
        listener.bind(("127.0.0.1", DEFAULT_SEND_PORT))
    except OSError:
        listener.close()
        pytest.skip(f"port {DEFAULT_SEND_PORT} is taken here")
    listener.listen()
    with listener:
        yield listener


def settings_on(port: int, tmp_path: Path, *argv: str) -> send_client.SenderSettings:
    base = ["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--token_path", str(tmp_path / "t")]
    return send_client.parse_settings([*base, *argv], {}, tmp_path)


async def test_silence_on_the_posting_port_gives_no_reading_port_hint(
    posting_port_listener: socket.socket, tmp_path: Path
) -> None:
    settings = settings_on(DEFAULT_SEND_PORT, tmp_path, "--reply-timeout", "0.2")
    with pytest.raises(ReplyTimeout) as caught:
        await asyncio.wait_for(send_client.send(settings, None, RecordingDelays()), WAIT)
    assert "while we waited for the greeting" in str(caught.value)
    assert HINT not in str(caught.value)


async def test_chat_on_the_posting_port_gives_no_reading_port_hint(tmp_path: Path) -> None:
    async def chat(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Eva: hello\n")
        await writer.drain()
        writer.close()

    try:
        listener = await asyncio.start_server(chat, "127.0.0.1", DEFAULT_SEND_PORT)
    except OSError:
        pytest.skip(f"port {DEFAULT_SEND_PORT} is taken here")
    async with listener:
        with pytest.raises(ProtocolError) as caught:
            await asyncio.wait_for(send_client.send(settings_on(DEFAULT_SEND_PORT, tmp_path), None), WAIT)
    assert str(caught.value) == 'expected the greeting from the server, got "Eva: hello"'


async def test_silence_on_another_port_still_gets_the_hint(server: FakeMinechatServer, tmp_path: Path) -> None:
    settings = settings_on(server.read_port, tmp_path, "--reply-timeout", "0.2")
    with pytest.raises(ReplyTimeout, match=re.escape(f"{HINT} Posts go to port {DEFAULT_SEND_PORT}")):
        await asyncio.wait_for(send_client.send(settings, None, RecordingDelays()), WAIT)
