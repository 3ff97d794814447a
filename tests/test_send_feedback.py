"""What a person sees: a confirmation per post on a terminal, and the reading-port hint only when it can be right."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import signal
import subprocess
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import POSIX_ONLY, START_WAIT, TOKEN, WAIT, RecordingDelays, client_process, send_to_end, stop_with_signal

import _minechat.posting
import send_client
from _minechat.dialogue import PostingDialogue
from _minechat.outbox import Outbox
from chat_io import ProtocolError, ReplyTimeout

HINT = "is this the reading port?"


def posting_from(server: FakeMinechatServer, cwd: Path, stdin: int) -> AbstractAsyncContextManager[Process]:
    """send_client.py posting what it reads from stdin, watching the server's chat."""
    return client_process(
        "send_client.py", "--read-port", str(server.read_port), "--token", TOKEN, "--message", "-",
        port=server.write_port, cwd=cwd, stdin=stdin,
    )  # fmt: skip


async def read_until(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    """Read stderr lines until one holds needle; return everything read."""
    seen = b""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), START_WAIT)
        if not line:
            raise AssertionError(f"stderr ended before {needle!r}: {seen!r}")
        seen += line
    return seen


@POSIX_ONLY
async def test_each_post_typed_on_a_terminal_is_confirmed(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    controller, terminal = pty.openpty()
    try:
        async with posting_from(server, tmp_path, terminal) as process:
            os.close(terminal)
            assert process.stderr is not None
            await read_until(process.stderr, b"Ctrl-D")
            os.write(controller, "привет\n".encode())
            assert b"posted: \xd0\xbf" in await read_until(process.stderr, b"posted: ")
            await server.wait_until(lambda: len(server.posts) == 1)
            os.write(controller, b"second line\n")
            assert b"posted: second line\n" in await read_until(process.stderr, b"posted: second")
            code = await stop_with_signal(process, signal.SIGINT)
    finally:
        os.close(controller)
    assert code == -signal.SIGINT
    assert [post.lines for post in server.posts] == [["привет"], ["second line"]]


async def test_posts_from_a_pipe_are_not_confirmed_one_by_one(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    async with posting_from(server, tmp_path, subprocess.PIPE) as process:
        _, err = await asyncio.wait_for(process.communicate(b"one\ntwo\n"), START_WAIT)
    assert process.returncode == 0
    assert b"posted: " not in err
    assert err.count(b"posted 2 messages") == 1


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts and never says a word; yields its port."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listener = await asyncio.start_server(hold, "127.0.0.1", 0)
    async with listener:
        yield listener.sockets[0].getsockname()[1]


async def silent_run(port: int, tmp_path: Path) -> str:
    argv = ["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--message", "hi", "--reply-timeout", "0.1"]
    settings = send_client.parse_settings(argv, {}, tmp_path)
    with pytest.raises(ReplyTimeout) as caught:
        await asyncio.wait_for(send_to_end(settings, io.BytesIO(), RecordingDelays()), WAIT)
    return str(caught.value)


async def test_silence_on_another_port_hints_at_the_reading_port(silent_server: int, tmp_path: Path) -> None:
    assert HINT in await silent_run(silent_server, tmp_path)


async def test_silence_on_the_posting_port_gives_no_reading_port_hint(
    silent_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_minechat.posting, "DEFAULT_SEND_PORT", silent_server)  # as if this were port 5050
    assert HINT not in await silent_run(silent_server, tmp_path)


@pytest.mark.parametrize("hint", [True, False])
def test_a_chat_line_instead_of_the_greeting_hints_only_when_it_can_be_right(hint: bool) -> None:
    dialogue = PostingDialogue(Outbox(), TOKEN, reading_port_hint=hint)
    dialogue.receive_data(b"Eva: hello\n")
    with pytest.raises(ProtocolError) as caught:
        dialogue.next_event()
    assert (HINT in str(caught.value)) is hint
