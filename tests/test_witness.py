"""The chat as a witness: a post the reading port shows has reached the chat, and is never sent again."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, WAIT, FakeTime, RecordingDelays, stop_with_signal
from fake_server import ConnectionPlan, FakeMinechatServer
from send_support import (
    TOKEN,
    StdinPipe,
    closed_port,
    read_stderr_until,
    run_client,
    settings_for,
    spawn_client,
    texts_of,
    wait_for,
)

import send_client
from _minechat.dialogue import Post, encode_post
from _minechat.witness import Witness

NICKNAME = "Focused Loyd"
ECHO_WAIT = 10.0


@pytest.fixture
async def account(server: FakeMinechatServer) -> str:
    return server.add_account(NICKNAME, TOKEN)


@pytest.fixture
def stdin_pipe() -> Iterator[StdinPipe]:
    pipe = StdinPipe()
    yield pipe
    pipe.close()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


# --- the witness, without sockets ----------------------------------------------------------------

ECHO = f"{NICKNAME}: ".encode()


def run_steps(steps: list[tuple[str, object]]) -> list[int]:
    """Play steps against a watching witness; return the numbers of the posts it said the chat showed."""
    clock = FakeTime(0.0)
    witness = Witness(clock, echo_wait=ECHO_WAIT)
    witness.connect()
    witness.know(NICKNAME)
    posts: dict[int, Post] = {}
    shown: list[int] = []
    for kind, argument in steps:
        if kind == "send":
            number, text = argument  # type: ignore[misc]
            witness.sent(posts.setdefault(number, Post(number, encode_post(text))))
        elif kind == "chat":
            shown += [post.number for post in witness.receive_data(argument)]  # type: ignore[arg-type]
        elif kind == "settle":
            witness.settled(posts[argument])  # type: ignore[index]
        elif kind == "wait":
            clock.value += argument  # type: ignore[operator]
        elif kind == "reconnect":
            witness.disconnect()
            witness.connect()
    return shown


@pytest.mark.parametrize(
    ("steps", "shown"),
    [
        pytest.param([("send", (1, "hi")), ("chat", ECHO + b"hi\n")], [1], id="echo"),
        pytest.param([("send", (1, "hi")), ("chat", ECHO[:5]), ("chat", ECHO[5:] + b"hi\n")], [1], id="in-pieces"),
        pytest.param([("send", (1, "hi")), ("chat", ECHO + b"hi\r\n")], [1], id="crlf"),
        pytest.param([("send", (1, "hi")), ("chat", b"Boring Eve: hi\n")], [], id="someone-else"),
        pytest.param([("send", (1, "hi")), ("chat", ECHO + b"hi there\n")], [], id="other-text"),
        pytest.param([("chat", ECHO + b"hi\n"), ("send", (1, "hi"))], [], id="echo-before-the-post"),
        pytest.param([("send", (1, "a\x1b[2J")), ("chat", ECHO + b"a\\x1b[2J\n")], [1], id="shown-as-sent-escaped"),
        pytest.param(
            [("send", (1, "same")), ("send", (2, "same")), ("chat", ECHO + b"same\n")], [1], id="identical-in-order"
        ),
        pytest.param(
            [("send", (1, "same")), ("send", (2, "same")), ("chat", (ECHO + b"same\n") * 2)], [1, 2], id="one-each"
        ),
        pytest.param(
            [("send", (1, "same")), ("settle", 1), ("send", (2, "same")), ("chat", ECHO + b"same\n")],
            [],
            id="echo-of-an-acknowledged-post-is-its-own",
        ),
        pytest.param(
            [("send", (1, "same")), ("send", (1, "same")), ("send", (2, "same")), ("chat", (ECHO + b"same\n") * 3)],
            [1, 2],
            id="a-post-sent-twice-may-show-twice",
        ),
        pytest.param(
            [("send", (1, "hi")), ("chat", ECHO + b"hi\n" + ECHO + b"hi\n")], [1], id="a-second-echo-is-no-news"
        ),
        pytest.param([("send", (1, "hi")), ("reconnect", None), ("chat", ECHO + b"hi\n")], [], id="lost-with-the-chat"),
        pytest.param(
            [("send", (1, "hi")), ("chat", ECHO + b"x" * 3_000_000 + b"\n" + ECHO + b"hi\n")],
            [1],
            id="long-skipped",
        ),
        pytest.param(
            [("send", (1, "hi")), ("chat", b"x" * 3_000_000 + ECHO + b"hi\n")],
            [],
            id="none-in-a-long-line",
        ),
    ],
)
def test_witness_matches_echoes_to_posts(steps: list[tuple[str, object]], shown: list[int]) -> None:
    assert run_steps(steps) == shown


def test_witness_sees_nothing_of_posts_sent_before_it_watched() -> None:
    witness = Witness(FakeTime(0.0), echo_wait=ECHO_WAIT)
    post = Post(1, encode_post("hi"))
    witness.know(NICKNAME)
    witness.sent(post)  # not connected yet: the chat would not show it to us
    witness.connect()
    assert witness.receive_data(ECHO + b"hi\n") == []


def test_witness_that_never_shows_an_acknowledged_post_is_blind() -> None:
    clock = FakeTime(0.0)
    witness = Witness(clock, echo_wait=ECHO_WAIT)
    witness.connect()
    witness.know(NICKNAME)
    post = Post(1, encode_post("hi"))
    witness.sent(post)
    witness.settled(post)
    clock.value += ECHO_WAIT - 1
    assert not witness.check()
    clock.value += 2
    assert witness.check()
    assert witness.blind and not witness.watching


def test_a_witness_that_showed_our_posts_is_not_blind_for_one_it_missed() -> None:
    clock = FakeTime(0.0)
    witness = Witness(clock, echo_wait=ECHO_WAIT)
    witness.connect()
    witness.know(NICKNAME)
    first, second = Post(1, encode_post("one")), Post(2, encode_post("two"))
    witness.sent(first)
    assert witness.receive_data(ECHO + b"one\n") == [first]
    witness.sent(second)
    witness.settled(second)
    clock.value += ECHO_WAIT + 1
    assert not witness.check()
    assert witness.watching
    assert witness.pending == 0  # the missed echo is no longer waited for


def test_witness_holds_a_bounded_number_of_expected_echoes() -> None:
    witness = Witness(FakeTime(0.0), echo_wait=ECHO_WAIT, max_expected=8)
    witness.connect()
    witness.know(NICKNAME)
    for number in range(1, 1000):
        post = Post(number, encode_post(f"post {number}"))
        witness.sent(post)
        witness.settled(post)
    assert witness.pending <= 8


# --- the witness at work ------------------------------------------------------------------------


async def test_slow_acknowledgements_with_the_chat_as_witness_post_each_line_once(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.ack_delay = 0.5  # later than --reply-timeout: every acknowledgement comes too late
    lines = ["one", "two", "three"]
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-", "--reply-timeout", "0.3")
    stdin = "".join(f"{line}\n" for line in lines).encode()
    sender = send_client.make_sender(settings, StdinBytes(stdin), RecordingDelays())  # type: ignore[arg-type]
    await asyncio.wait_for(sender.run(), WAIT * 2)
    assert texts_of(server) == lines  # each once
    assert sender.outbox.delivered == 3


class StdinBytes:
    """A stdin with no descriptor: the bytes given, then its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


async def test_a_post_the_chat_showed_is_not_sent_again_after_a_drop(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    server.plans.append(ConnectionPlan(posts=0, take_unacked=True))  # takes "one", then hangs up unacknowledged
    messages = ["--message", "one", "--message", "two"]
    await asyncio.wait_for(send_client.send(settings_for(server, tmp_path, "--token", account, *messages), None), WAIT)
    assert texts_of(server) == ["one", "two"]
    assert texts_of(server, acknowledged_only=True) == ["two"]
    assert records(caplog, logging.INFO)[-1].startswith("posted 2 messages as Focused Loyd")


async def test_identical_posts_are_matched_one_echo_each(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # Acknowledges the first, takes the second without acknowledging it, hangs up before the third.
    server.plans.append(ConnectionPlan(posts=1, take_unacked=True))
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await asyncio.wait_for(send_client.send(settings, StdinBytes(b"same\nsame\nsame\n"), RecordingDelays()), WAIT)  # type: ignore[arg-type]
    assert texts_of(server) == ["same"] * 3  # the second's echo stood for it alone: the third was sent


async def test_the_witness_watches_before_the_first_post(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await asyncio.wait_for(send_client.send(settings, StdinBytes(b"first\n"), RecordingDelays()), WAIT)  # type: ignore[arg-type]
    [post] = server.posts
    assert post.readers == 1  # our witness, connected before the post went out
    assert server.reader_connections == 1


async def test_no_witness_without_posts(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    await asyncio.wait_for(send_client.send(settings_for(server, tmp_path, "--nickname", "Eve"), None), WAIT)
    await asyncio.wait_for(send_client.send(settings_for(server, tmp_path, "--token", account, "--check"), None), WAIT)
    assert server.reader_connections == 0


async def test_an_unreachable_chat_is_said_once_and_posting_goes_on(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture, stdin_pipe: StdinPipe
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    server.plans.append(ConnectionPlan(posts=1))  # one reconnect: the witness is not tried again
    with closed_port() as port:
        settings = settings_for(server, tmp_path, "--token", account, "--message", "-", read_port=port)
        task = asyncio.ensure_future(send_client.send(settings, stdin_pipe.reader, RecordingDelays()))
        try:
            await stdin_pipe.write(b"one\ntwo\n")
            stdin_pipe.end()
            await asyncio.wait_for(task, WAIT)
        finally:
            task.cancel()
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]
    notes = [message for message in records(caplog, logging.INFO) if "watch the chat" in message]
    assert notes == [
        f"cannot watch the chat at 127.0.0.1:{port} for our posts: Connection refused; going on without it"
    ]


async def test_for_a_single_message_an_unreachable_chat_is_noted_at_debug_level(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    with closed_port() as port:
        settings = settings_for(server, tmp_path, "--token", account, "--message", "hi", read_port=port)
        await asyncio.wait_for(send_client.send(settings, None), WAIT)
    assert texts_of(server) == ["hi"]
    assert [message for message in records(caplog, logging.DEBUG) if "watch the chat" in message]
    assert not [record for record in caplog.records if "watch the chat" in record.getMessage() and record.levelno > 10]


async def test_a_chat_that_shows_posts_in_another_shape_is_said_once_and_given_up(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    caplog: pytest.LogCaptureFixture,
    stdin_pipe: StdinPipe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    monkeypatch.setattr("_minechat.witness.ECHO_WAIT", 0.2)
    server.chat_shows = lambda nickname, text: f"<{nickname}> {text}\n".encode()
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.send(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"one\n")
        await server.wait_until(lambda: texts_of(server, acknowledged_only=True) == ["one"])
        # Once the echo is overdue, the next acknowledgement finds the witness blind, and it is given up.
        await wait_for(lambda: any("does not show our posts" in message for message in records(caplog, logging.INFO)))
        await stdin_pipe.write(b"two\nthree\n")
        stdin_pipe.end()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    notes = [message for message in records(caplog, logging.INFO) if "does not show our posts" in message]
    assert notes == [
        f"the chat at 127.0.0.1:{server.read_port} does not show our posts as '{NICKNAME}: <text>'; going on without it"
    ]
    await server.wait_until(lambda: not server.readers)  # the witness hung up


async def test_a_witness_the_server_drops_is_connected_again_with_the_next_connection(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    server.idle_timeout = 0.3  # the posting connection goes idle and is dropped between the lines
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.send(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"one\n")
        await server.wait_until(lambda: texts_of(server, acknowledged_only=True) == ["one"])
        await server.drop_readers()
        await server.wait_until(lambda: server.idle_drops == 1)
        await stdin_pipe.write(b"two\n")
        stdin_pipe.end()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert texts_of(server) == ["one", "two"]
    assert [post.readers for post in server.posts] == [1, 1]
    assert server.reader_connections == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_ctrl_c_while_the_witness_is_still_connecting(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # A reading port that never accepts: its backlog is full, so the witness waits for --connect-timeout.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
                fillers.append(filler)
            argv = ["--token", account, "--message", "-", "--read-port", str(listener.getsockname()[1])]
            process = await spawn_client(server, tmp_path, *argv, "--connect-timeout", "30", "-v")
            assert process.stdin is not None
            process.stdin.write(b"held back until the witness watches\n")
            await process.stdin.drain()
            await read_stderr_until(process, b"Welcome to chat!")
            code = await stop_with_signal(process, signal.SIGINT)
        finally:
            for filler in fillers:
                filler.close()
    assert code == 130
    assert server.posts == []


@POSIX_ONLY
async def test_cli_stream_with_the_witness_exits_cleanly(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    lines = [f"line {number}" for number in range(200)]
    stdin = "".join(f"{line}\n" for line in lines).encode()
    argv = ["--token", account, "--message", "-", "--read-port", str(server.read_port)]
    code, _, err = await run_client(server, tmp_path, *argv, stdin=stdin)
    assert code == 0, err
    assert "Traceback" not in err and "never retrieved" not in err and "Task was destroyed" not in err
    assert texts_of(server) == lines
    assert "posted 200 messages as Focused Loyd" in err


def test_read_port_option_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = send_client.parse_settings(["--token", TOKEN], {"READ_PORT": "6000"}, tmp_path)
    assert settings.read_port == 6000
    monkeypatch.undo()  # the default of the real chat, not the refusing port the tests watch
    assert send_client.parse_settings(["--token", TOKEN], {}, tmp_path).read_port == 5000
    assert send_client.parse_settings(["--token", TOKEN, "--read-port", "7000"], {}, tmp_path).read_port == 7000
    with pytest.raises(SystemExit):
        send_client.parse_settings(["--token", TOKEN, "--read-port", "0"], {}, tmp_path)
