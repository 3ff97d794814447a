"""What the person at the sender sees: confirmations on a terminal, hints that can be right, the documented codes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, ROOT, WAIT, RecordingDelays
from fake_server import ConnectionPlan, FakeMinechatServer
from send_support import TOKEN, StdinPipe, closed_port, run_client, settings_for, spawn_client, texts_of, wait_for

import send_client
from _minechat.shutdown import SignalCatcher
from chat_io import (
    DEFAULT_SEND_PORT,
    EXIT_FAILURE,
    EXIT_FILE,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_SIGNAL_BASE,
    EXIT_UNKNOWN_TOKEN,
    EXIT_USAGE,
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


# --- a post confirmed as it is acknowledged, on a terminal only ----------------------------------


@POSIX_ONLY
async def test_each_post_typed_on_a_terminal_is_confirmed_as_it_is_acknowledged(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    import pty

    server.add_account("Focused Loyd", TOKEN)
    controller, terminal = pty.openpty()
    try:
        process = await spawn_client(server, tmp_path, "--token", TOKEN, "--message", "-", stdin=terminal)
        os.close(terminal)
        terminal = -1
        assert process.stderr is not None
        try:
            for text in ("first by hand", "second by hand"):
                os.write(controller, f"{text}\n".encode())
                # Confirmed while the client still runs, not in the summary at the end.
                line = b""
                while b"posted: " not in line:
                    line = await asyncio.wait_for(process.stderr.readline(), WAIT * 3)
                assert line.decode().rstrip("\n").endswith(f" INFO posted: {text}")
                assert texts_of(server, acknowledged_only=True)[-1] == text
            os.write(controller, b"\x04")  # Ctrl-D at the start of a line: the end of input
            code = await asyncio.wait_for(process.wait(), WAIT * 3)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    rest = (await process.stderr.read()).decode()
    assert code == EXIT_OK, rest
    assert "posted: " not in rest  # once each, no more
    assert "posted 2 messages as Focused Loyd" in rest


async def test_posts_from_a_pipe_are_not_confirmed_one_by_one(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    code, _, err = await run_client(server, tmp_path, "--token", TOKEN, "--message", "-", stdin=b"one\ntwo\nthree\n")
    assert code == EXIT_OK, err
    assert "posted: " not in err
    assert "posted 3 messages as Focused Loyd" in err


async def test_fixed_messages_are_not_confirmed_one_by_one(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    code, _, err = await run_client(server, tmp_path, "--token", TOKEN, "--message", "a", "--message", "b", stdin=None)
    assert code == EXIT_OK, err
    assert "posted: " not in err


# --- what the documents promise ---------------------------------------------------------------


def test_the_readme_gives_every_exit_code_a_stream_can_end_with() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    found = re.search(
        r"`send_client\.py --message -` never gives up on the network, so it ends only with ([^.]+)\.", readme
    )
    assert found is not None
    listed = {int(code) for code in re.findall(r"\d+", found.group(1))}
    signals = {EXIT_SIGNAL_BASE + signum for signum in SignalCatcher.SIGNALS}
    assert listed == {EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PROTOCOL, EXIT_UNKNOWN_TOKEN, EXIT_FILE} | signals


def test_the_env_example_says_nickname_is_for_the_first_run_only() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    comment = example.split("# NICKNAME=", 1)[0].rsplit("\n\n", 1)[1]
    text = " ".join(comment.replace("#", " ").split())
    assert "first run only" in text
    assert "exit code 2" in text  # what a NICKNAME left set does to every later run


async def test_a_nickname_left_in_dotenv_after_registering_is_a_usage_error(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("NICKNAME=Eve\n")
    code, _, err = await run_client(server, tmp_path, stdin=None)
    assert code == EXIT_OK, err  # the first run registers
    code, _, err = await run_client(server, tmp_path, "--message", "hi", stdin=None)
    assert code == EXIT_USAGE
    assert "--nickname (or NICKNAME) registers a new account, but a token was found" in err
    assert server.posts == []


# --- behaviours no test pinned ----------------------------------------------------------------


async def test_progress_starts_the_give_up_count_over_for_fixed_messages(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.add_account("Focused Loyd", TOKEN)
    messages = [f"message {number}" for number in range(8)]
    # Every connection acknowledges one post and hangs up: 8 connections, more than RESUME_TRIES.
    server.plans.extend(ConnectionPlan(posts=1) for _ in messages)
    assert len(messages) > send_client.RESUME_TRIES + 1
    with closed_port() as unwatched:
        argv = [arg for message in messages for arg in ("--message", message)]
        settings = settings_for(server, tmp_path, "--token", TOKEN, *argv, read_port=unwatched)
        code = await asyncio.wait_for(send_client.run(settings, None, RecordingDelays()), WAIT * 2)
    assert code == EXIT_OK
    assert texts_of(server) == messages  # each once
    assert len(server.send_transcripts) == len(messages)


async def test_an_idle_stream_connection_reset_by_the_server_is_no_failure(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    server.add_account("Focused Loyd", TOKEN)
    pipe = StdinPipe()
    delays = RecordingDelays()
    try:
        with closed_port() as unwatched:
            settings = settings_for(server, tmp_path, "--token", TOKEN, "--message", "-", read_port=unwatched)
            sender = send_client.make_sender(settings, pipe.reader, delays)
            task = asyncio.ensure_future(sender.run())
            try:
                await pipe.write(b"one\n")
                await wait_for(lambda: sender.outbox.delivered == 1)  # acknowledged: the connection is idle
                await server.reset_senders()
                await server.wait_until(lambda: server.senders_done == 1)
                await pipe.write(b"two\n")
                await server.wait_until(lambda: texts_of(server, acknowledged_only=True) == ["one", "two"])
                pipe.end()
                await asyncio.wait_for(task, WAIT)
            finally:
                task.cancel()
    finally:
        pipe.close()
    assert texts_of(server) == ["one", "two"]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert delays.taken == []  # no delay at all, let alone a growing one: the next line went out at once
    assert len(server.send_transcripts) == 2
