"""send_client behaviours that mutation testing found unchecked: each test here kills mutants the rest let live."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import WAIT, RecordingDelays
from fake_server import GREETING, ConnectionPlan, FakeMinechatServer
from test_send_client import TOKEN, StdinPipe, settings_for, texts_of

import send_client
from chat_io import EXIT_CONNECTION, EXIT_FILE, EXIT_PROTOCOL, FileError
from send_client import OUTBOX_POSTS


@pytest.fixture
async def account(server: FakeMinechatServer) -> AsyncIterator[str]:
    yield server.add_account("Focused Loyd", TOKEN)


@pytest.fixture
def stdin_pipe() -> Iterator[StdinPipe]:
    pipe = StdinPipe()
    yield pipe
    pipe.close()


async def run_main(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run send_client.main in-process (in a thread, as it runs its own event loop); return its exit code."""
    monkeypatch.chdir(cwd)
    return await asyncio.wait_for(asyncio.to_thread(send_client.main, argv), WAIT * 2)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


# --- the CLI, in-process ---------------------------------------------------------------


async def test_a_reply_quoting_the_token_shows_a_placeholder(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.login_reply_override = f"no account has the hash {account}\n".encode()
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "hi"]
    assert await run_main(argv, tmp_path, monkeypatch) == EXIT_PROTOCOL
    err = capsys.readouterr().err
    assert account not in err
    [line] = error_lines(err)
    assert line.endswith(' ERROR expected account details from the server, got "no account has the hash <token>"')


@pytest.fixture
async def resetting_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A posting port that greets, takes the token, and resets the connection instead of replying."""
    took_token = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await writer.drain()
        await reader.readline()
        took_token.set()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], took_token
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_reset_while_reading_a_reply_is_exit_3_with_one_line(
    resetting_server: tuple[int, asyncio.Event],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, took_token = resetting_server
    argv = ["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--message", "hi"]
    assert await run_main(argv, tmp_path, monkeypatch) == EXIT_CONNECTION
    assert took_token.is_set()
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(" ERROR the connection broke while we waited for the login reply: Connection reset by peer")


async def test_cli_unusable_token_path_is_exit_6_before_connecting(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token_path", "missing/token.txt"]
    assert await run_main([*argv, "--nickname", "Eve"], tmp_path, monkeypatch) == EXIT_FILE
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f" ERROR cannot save a token in {tmp_path / 'missing'}: No such file or directory; choose another --token_path"
    )
    assert server.send_transcripts == []


async def test_cli_posts_and_reports(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account]
    assert await run_main([*argv, "--message", "one", "--message", "two"], tmp_path, monkeypatch) == 0
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]
    lines = error_lines(capsys.readouterr().err)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO logged in as Focused Loyd",
        "INFO posted 2 messages as Focused Loyd",
    ]


# --- an unusable token path is found before anything is registered ------------------------


async def test_unusable_token_path_is_found_before_connecting(server: FakeMinechatServer, tmp_path: Path) -> None:
    settings = settings_for(
        server, tmp_path, "--token_path", str(tmp_path / "missing" / "token.txt"), "--nickname", "Eve"
    )
    with pytest.raises(FileError, match=r"^cannot save a token in .*; choose another --token_path$"):
        await send_client.send(settings, None, RecordingDelays())
    assert server.send_transcripts == [] and server.registrations == []


# --- backoff -------------------------------------------------------------------------------


async def test_backoff_delay_is_really_waited(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.extend(ConnectionPlan(refuse=True) for _ in range(2))
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send_client.send(settings, StdinBytes(b"one\n"), lambda: itertools.repeat(0.2))
    assert loop.time() - started >= 0.4
    assert texts_of(server) == ["one"] and server.refused == 2


class StdinBytes:
    """A stdin with no descriptor: the bytes given, then its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


async def test_backoff_starts_over_only_after_an_acknowledgement(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # Each of the first two connections acknowledges one post; the next two acknowledge none.
    server.plans.extend(
        [ConnectionPlan(posts=1), ConnectionPlan(posts=1), ConnectionPlan(posts=0), ConnectionPlan(posts=0)]
    )
    delays = RecordingDelays()
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_client.send(settings_for(server, tmp_path, "--token", account, *messages), None, delays)
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    assert delays.resets == 3
    assert delays.taken == [0.002, 0.002, 0.004, 0.008]


# --- the post window ---------------------------------------------------------------------


async def test_post_window_holds_1024_posts_then_reopens(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    server.ack_gate = asyncio.Event()
    lines = [f"post {number}" for number in range(OUTBOX_POSTS + 500)]
    await stdin_pipe.write("".join(f"{line}\n" for line in lines).encode())
    stdin_pipe.end()
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    sender = send_client.make_sender(settings, stdin_pipe.reader, RecordingDelays())
    task = asyncio.ensure_future(sender.run())
    try:
        await server.wait_until(lambda: len(server.posts) >= OUTBOX_POSTS, timeout=WAIT)
        # Every line is read at once; the window takes 1,024 of them and stdin waits for acknowledgements.
        assert sender.outbox.added == OUTBOX_POSTS
        assert len(server.posts) == OUTBOX_POSTS
        assert not any(post.acknowledged for post in server.posts)
        server.ack_gate.set()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert texts_of(server, acknowledged_only=True) == lines
    assert len(server.send_transcripts) == 1
    assert (sender.outbox.added, sender.outbox.acknowledged, sender.outbox.resent) == (len(lines), len(lines), 0)


async def test_a_server_that_never_acknowledges_gets_the_window_and_a_timeout(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.withhold_acks = True
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-", "--reply-timeout", "0.3")
    stdin = StdinBytes(b"".join(b"post %d\n" % number for number in range(5)))
    sender = send_client.make_sender(settings, stdin, RecordingDelays())  # type: ignore[arg-type]
    sender.outbox = send_client.Outbox(max_posts=3)
    task = asyncio.ensure_future(sender.run())
    try:
        await server.wait_until(lambda: len(server.send_transcripts) >= 2, timeout=WAIT)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The first connection took the three posts of the window, none more, and was given up on.
    assert [post.lines for post in server.posts[:3]] == [["post 0"], ["post 1"], ["post 2"]]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\npost 0\n\npost 1\n\npost 2\n\n".encode()
    assert sender.outbox.added == 3


# --- the end of stdin -------------------------------------------------------------------


async def test_stdin_closing_right_after_the_last_acknowledgement_ends_the_run(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.run(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"one\n")
        await server.wait_until(lambda: texts_of(server, acknowledged_only=True) == ["one"])
        stdin_pipe.end()
        assert await asyncio.wait_for(task, WAIT) == 0
    finally:
        task.cancel()
    assert len(server.send_transcripts) == 1
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\none\n\n".encode()


async def test_last_stdin_line_without_newline_alone(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await send_client.send(settings, StdinBytes(b"only"), RecordingDelays())  # type: ignore[arg-type]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\nonly\n\n".encode()
