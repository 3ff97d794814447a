"""Posting many messages: stdin streams, the post window, resuming after drops and giving up."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import random
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import ACK, GREETING, WELCOME, ConnectionPlan, FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    START_WAIT,
    TOKEN,
    WAIT,
    RecordingDelays,
    StdinBytes,
    StdinPipe,
    client_process,
    free_port,
    run_sender,
    run_sender_process,
    scripted_server,
    send_to_end,
    settings_at,
    settings_for,
    stop_with_signal,
    texts_of,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.outbox
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import send_client
from _minechat.outbox import MAX_SENDS, OUTBOX_POSTS
from _minechat.posting import RESUME_TRIES, Sender
from chat_io import ConnectionFailed, ReplyTimeout, UnknownTokenError


class FailingStdin(StdinBytes):
    """A stdin that gives its bytes, then fails as a vanished terminal does."""

    def read(self, size: int) -> bytes:
        chunk = super().read(size)
        if not chunk:
            raise OSError(5, "Input/output error")
        return chunk


async def log_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, nickname: str = "Focused Loyd") -> None:
    """Play the server's side of a login with any token."""
    writer.write(GREETING)
    token = (await reader.readline()).decode().strip()
    writer.write(f'{{"nickname": "{nickname}", "account_hash": "{token}"}}\n'.encode() + WELCOME)
    await writer.drain()


async def test_cli_posts_thousand_stdin_lines_in_order(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    lines = [f"line {number} — строка" for number in range(1000)]
    stdin = ("\n".join(lines[:500]) + "\n\n" + "\r\n".join(lines[500:]) + "\n").encode()
    code, _, err = await run_sender_process(
        server.write_port, tmp_path, "--token", account, "--message", "-", stdin=stdin
    )
    assert code == 0, err
    assert [post.lines for post in server.posts] == [[line] for line in lines]
    assert "posted 1000 messages as Focused Loyd" in err
    assert "Ctrl-D" not in err  # the hint is for a terminal only


async def test_fixed_messages_resume_after_drops(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    # Acknowledge "one", take "two" without acknowledging it; then a connection that takes nothing.
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True), ConnectionPlan(posts=0)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    sender = await run_sender(settings_for(server, tmp_path, "--token", account, *messages))
    assert texts_of(server) == ["one", "two", "two", "three"]
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    assert len(server.send_transcripts) == 3
    assert bytes(server.send_transcripts[2]) == f"{TOKEN}\ntwo\n\nthree\n\n".encode()
    # "two" and "three" went out on each of the 3 connections: 4 sends of posts sent before.
    assert (sender.outbox.acknowledged, sender.outbox.repeated, sender.outbox.most_copies) == (3, 2, 3)


async def test_fixed_messages_give_up_after_fruitless_tries(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.plans.extend(ConnectionPlan(posts=0, take_unacked=True) for _ in range(RESUME_TRIES + 3))
    # Each connection takes the post and hangs up before acknowledging it: it goes out MAX_SENDS times.
    with pytest.raises(ConnectionFailed, match=f"acknowledgement of message 1; 1 message went out {MAX_SENDS} times"):
        await run_sender(settings_for(server, tmp_path, "--token", account, "--message", "one"))
    assert len(server.send_transcripts) == MAX_SENDS
    assert texts_of(server) == ["one"] * MAX_SENDS


async def test_fixed_messages_fail_fast_without_any_connection(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.plans.append(ConnectionPlan(refuse=True))
    with pytest.raises(ConnectionFailed, match="closed the connection while we waited for the greeting"):
        await run_sender(settings_for(server, tmp_path, "--token", account, "--message", "one"))
    assert len(server.send_transcripts) == 1


async def test_stream_waits_out_a_refusing_server(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.extend(ConnectionPlan(refuse=True) for _ in range(8))
    await run_sender(settings_for(server, tmp_path, "--token", account, "--message", "-"), b"one\ntwo\n")
    assert texts_of(server) == ["one", "two"]
    assert server.refused == 8


async def test_stream_reconnects_after_an_idle_drop(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    server.idle_timeout = 0.2
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_to_end(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"before\n")
        await server.wait_until(lambda: server.idle_drops == 1)
        await stdin_pipe.write(b"after\n")
        stdin_pipe.end()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert texts_of(server) == ["before", "after"]
    assert len(server.send_transcripts) == 2


@pytest.mark.slow
async def test_stream_of_3000_lines_survives_a_failing_server(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    rng = random.Random(7)
    for number in range(20):  # at most 2,800 posts acknowledged under plans: all of them come into play
        if number == 6:
            server.plans.extend(ConnectionPlan(refuse=True) for _ in range(6))  # out of service for a while
        server.plans.append(ConnectionPlan(posts=rng.randint(0, 140), take_unacked=rng.random() < 0.5))
    server.idle_timeout = 0.3
    lines = [f"line {number} — строка {rng.random()}" for number in range(3000)]
    data = "".join(f"{line}\n" for line in lines).encode()
    half = data.index(f"{lines[1500]}\n".encode())
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.run(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(data[:half])
        # Once the first half is acknowledged the client idles, and the server drops it.
        await server.wait_until(lambda: len(texts_of(server, acknowledged_only=True)) == 1500, timeout=WAIT * 3)
        await server.wait_until(lambda: server.senders_done == len(server.send_transcripts))
        await stdin_pipe.write(data[half:])
        stdin_pipe.end()
        assert await asyncio.wait_for(task, WAIT * 3) == 0
    finally:
        task.cancel()
    assert texts_of(server, acknowledged_only=True) == lines  # every line, in order, acknowledged once
    for index, post in enumerate(server.posts):
        if not post.acknowledged:  # taken but not acknowledged: the only kind of post sent twice
            assert server.posts[index + 1].lines == post.lines
    assert server.refused == 6 and server.idle_drops >= 1 and not server.plans


@pytest.mark.slow
@POSIX_ONLY
async def test_cli_stream_survives_a_reset(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.append(ConnectionPlan(posts=3, reset=True))
    lines = [f"line {number}" for number in range(5000)]
    stdin = "".join(f"{line}\n" for line in lines).encode()
    code, _, err = await run_sender_process(
        server.write_port, tmp_path, "--token", account, "--message", "-", stdin=stdin
    )
    assert code == 0, err
    assert "Traceback" not in err and "never retrieved" not in err
    assert list(dict.fromkeys(texts_of(server))) == lines
    assert "trying again in" in err
    assert "posted 5000 messages as Focused Loyd" in err


async def test_stdin_separators_stay_inside_one_post(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    stdin = "a\rb\x0cc\x85d\u2028e\x0bf\x1cg\r\nsecond\n".encode()
    await run_sender(settings_for(server, tmp_path, "--token", account, "--message", "-"), stdin)
    assert texts_of(server) == ["a b c d e f g", "second"]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\na b c d e f g\n\nsecond\n\n".encode()


async def test_long_stdin_line_is_one_post_as_on_the_command_line(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    long = " ".join(["слово"] * 20_000)  # 220 KB
    await run_sender(settings_for(server, tmp_path, "--token", account, "--message", "-"), f"{long}\n".encode())
    await run_sender(settings_for(server, tmp_path, "--token", account, "--message", long))
    assert [post.lines for post in server.posts] == [[long], [long]]
    assert server.send_transcripts[0] == server.send_transcripts[1]


async def test_last_stdin_line_without_newline_is_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    await run_sender(settings_for(server, tmp_path, "--token", account, "--message", "-"), b"one\n\n \ntwo")
    assert texts_of(server) == ["one", "two"]


@POSIX_ONLY
async def test_cli_ctrl_c_while_stdin_waits_for_a_stalled_server(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.withhold_acks = True
    async with client_process(
        "send_client.py",
        "--token",
        account,
        "--message",
        "-",
        port=server.write_port,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
    ) as process:
        assert process.stdin is not None and process.stderr is not None
        # Far more than the outbox and the read-ahead take; buffered here, never drained.
        process.stdin.write(b"".join(b"line %06d\n" % number for number in range(100_000)))
        try:
            # A full outbox: the client stops reading stdin, its reading thread waits with data in hand.
            await server.wait_until(lambda: len(server.posts) >= _minechat.outbox.OUTBOX_POSTS, timeout=START_WAIT)
        finally:
            code = await stop_with_signal(process, signal.SIGINT)
            process.stdin.close()
            with suppress(OSError):
                await process.stdin.wait_closed()  # retrieves the broken pipe (Python 3.10 would log it)
    err = (await process.stderr.read()).decode()
    assert code == -signal.SIGINT
    # Only our own log lines: no "Exception in thread stdin", no traceback, no warning from the handover.
    assert all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line) for line in err.splitlines()), err
    assert (
        f"interrupted: posted 0 messages as Focused Loyd; {_minechat.outbox.OUTBOX_POSTS} more not acknowledged" in err
    )


async def test_backoff_delay_is_really_waited(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.extend(ConnectionPlan(refuse=True) for _ in range(2))
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send_to_end(settings, StdinBytes(b"one\n"), lambda: itertools.repeat(0.2))
    assert loop.time() - started >= 0.4
    assert texts_of(server) == ["one"] and server.refused == 2


async def test_backoff_starts_over_only_after_an_acknowledgement(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # Each of the first two connections acknowledges one post; the next two acknowledge none.
    server.plans.extend(
        [ConnectionPlan(posts=1), ConnectionPlan(posts=1), ConnectionPlan(refuse=True), ConnectionPlan(refuse=True)]
    )
    delays = RecordingDelays()
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_to_end(settings_for(server, tmp_path, "--token", account, *messages), None, delays)
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    assert delays.resets == 3
    assert delays.taken == [0.002, 0.002, 0.004, 0.008]


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
    resent = bytes(server.send_transcripts[0]).count(b"\n\n") - len(lines)
    assert (sender.outbox.added, sender.outbox.acknowledged, resent) == (len(lines), len(lines), 0)


async def test_a_server_that_never_acknowledges_gets_the_window_and_a_timeout(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.withhold_acks = True
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-", "--reply-timeout", "0.3")
    stdin = StdinBytes(b"".join(b"post %d\n" % number for number in range(5)))
    sender = send_client.make_sender(settings, stdin, RecordingDelays())  # type: ignore[arg-type]
    sender.outbox.max_posts = 3
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
    await send_to_end(settings, StdinBytes(b"only"), RecordingDelays())  # type: ignore[arg-type]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\nonly\n\n".encode()


async def test_a_resumed_run_says_what_it_sends_again_and_what_it_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True), ConnectionPlan(posts=0)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_to_end(settings_for(server, tmp_path, "--token", account, *messages), None, RecordingDelays())
    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    infos = [info for info in infos if not info.startswith("cannot read the chat")]  # no reading port here
    assert infos == [
        "logged in as Focused Loyd",  # once: the later logins are at debug level
        "sending 2 messages again that the server had not acknowledged when the connection was lost",
        "sending 2 messages again that the server had not acknowledged when the connection was lost",
        "posted 3 messages as Focused Loyd; 2 messages had to be sent more than once, "
        "so the chat may show up to 3 copies of one",
    ]


async def test_stdin_in_another_encoding_and_bytes_that_are_not_text(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    stdin = StdinBytes("Привет\n".encode("cp1251") + b"\x98 odd\n")
    sender = send_client.make_sender(settings, stdin, RecordingDelays(), encoding="cp1251")  # type: ignore[arg-type]
    await sender.run()
    assert texts_of(server) == ["Привет", "\ufffd odd"]


async def test_a_failing_stdin_ends_the_messages(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await send_to_end(settings, FailingStdin(b"one\ntwo"), RecordingDelays())  # type: ignore[arg-type]
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]


async def test_run_reads_stdin_in_the_given_encoding(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    stdin = StdinBytes("Ж\n".encode("cp1251"))
    assert await send_client.run(settings, stdin, RecordingDelays(), encoding="cp1251") == 0  # type: ignore[arg-type]
    assert texts_of(server) == ["Ж"]


async def test_retries_say_what_waits(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    await send_to_end(settings_for(server, tmp_path, "--token", account, *messages), None, RecordingDelays())
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "the server closed the connection while we waited for the acknowledgement of message 2; "
        "trying again in 0.0 s (2 messages waiting)"
    ]


async def test_progress_gives_the_sender_its_tries_afresh(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    # One connection acknowledges a post, then RESUME_TRIES - 1 acknowledge none: still within the tries.
    server.plans.extend([ConnectionPlan(posts=1), *(ConnectionPlan(refuse=True) for _ in range(RESUME_TRIES - 1))])
    messages = ["--message", "one", "--message", "two"]
    await send_to_end(settings_for(server, tmp_path, "--token", account, *messages), None, RecordingDelays())
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]


async def test_a_fatal_error_while_stdin_waits_is_reported_as_itself(
    server: FakeMinechatServer, tmp_path: Path, stdin_pipe: StdinPipe
) -> None:
    settings = settings_for(server, tmp_path, "--token", "unknown", "--message", "-")
    with pytest.raises(UnknownTokenError):
        await asyncio.wait_for(send_to_end(settings, stdin_pipe.reader, RecordingDelays()), WAIT)


async def test_a_failure_reading_the_messages_ends_the_run(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    async def messages() -> AsyncIterator[list[str]]:
        yield ["one"]
        raise RuntimeError("the messages broke")

    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    sender = Sender(settings, messages(), RecordingDelays())
    with pytest.raises(RuntimeError, match="the messages broke"):
        await asyncio.wait_for(sender.run(), WAIT)


async def test_blank_stdin_lines_are_skipped_not_the_rest_of_the_batch(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    await send_to_end(settings, StdinBytes(b"one\n\ntwo\n"), RecordingDelays())  # type: ignore[arg-type]
    assert texts_of(server) == ["one", "two"]
    assert "skipping an empty line of stdin" in [record.getMessage() for record in caplog.records]


async def test_stream_with_nothing_to_post_ends_while_the_server_is_down(tmp_path: Path) -> None:
    settings = settings_at(free_port(), tmp_path, "--token", TOKEN, "--message", "-")
    # A sender that kept trying the port would never end: the bound is for that, not for how fast it ends.
    await asyncio.wait_for(send_to_end(settings, io.BytesIO(b"\n  \n"), RecordingDelays()), WAIT)


@pytest.mark.slow
async def test_long_post_over_a_slow_upload_is_posted_once(tmp_path: Path) -> None:
    connections: list[int] = []  # bytes of posts taken on each connection
    second_connection = asyncio.Event()

    async def read_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        if len(connections) > 1:
            second_connection.set()
        await log_in(reader, writer)
        tail = b""
        while chunk := await reader.read(64 * 1024):
            tail = (tail + chunk)[-2:]
            if tail == b"\n\n":
                connections[-1] += 1
                writer.write(ACK)
            await asyncio.sleep(0.1)  # about 640 KB/s: a 1 MiB post takes 1.6 s to arrive

    line = b"a" * (1024 * 1024 - 1) + b"\n"
    async with scripted_server(read_slowly) as port:
        settings = settings_at(port, tmp_path, "--token", TOKEN, "--message", "-", "--reply-timeout", "0.5")
        task = asyncio.ensure_future(send_to_end(settings, io.BytesIO(line), RecordingDelays()))
        waiter = asyncio.ensure_future(second_connection.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=WAIT * 2, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            await _minechat.shutdown.cancel_and_wait(task)
    if task.done() and not task.cancelled():
        with suppress(ReplyTimeout):
            task.exception()
    assert len(connections) == 1, f"posts taken per connection: {connections}"


async def test_invisible_only_stdin_line_is_skipped(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    settings = settings_at(server.write_port, tmp_path, "--token", TOKEN, "--message", "-")
    await send_to_end(settings, io.BytesIO("\ufe0f\u034f\ufe0e\nreal\n".encode()), RecordingDelays())
    assert [post.lines for post in server.posts] == [["real"]]
