"""Attacks on send_client's promises, each found by a review that set out to break them; not fixed yet (xfail)."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import signal
import struct
import subprocess
import sys
import termios
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import ACK, GREETING, NICKNAME_PROMPT, FakeMinechatServer
from helpers import (
    LINUX_ONLY,
    PIPE_CAPACITY,
    POSIX_ONLY,
    ROOT,
    TOKEN,
    WAIT,
    RecordingDelays,
    client_env,
    free_port,
    log_in,
    run_cli,
    scripted_server,
    settings_at,
    stop_with_signal,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import send_client
from chat_io import EXIT_FILE, ChatError, ReplyTimeout

# --- 5. the token never appears in output ------------------------------------------


async def test_token_echoed_late_in_a_reply_does_not_leak_in_part(tmp_path: Path) -> None:
    async def echo_token(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        token = await reader.readline()
        # An error line that quotes what the client sent, past the 80 characters an error message quotes.
        writer.write(b"e" * 42 + b" " + token.rstrip(b"\n") + b" is not a known hash, register first\n")
        await writer.drain()
        await reader.read()

    async with scripted_server(echo_token) as port:
        code, err = await run_cli(port, tmp_path, "--token", TOKEN, "--message", "hi", "-v")
    assert code == 4, err
    leaked = [TOKEN[start : start + 8] for start in range(len(TOKEN) - 7) if TOKEN[start : start + 8] in err]
    assert not leaked, err


# --- 2. the token file ----------------------------------------------------------------


@POSIX_ONLY
async def test_token_path_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "token.txt")
    code, err = await run_cli(free_port(), tmp_path, "--message", "hi", timeout=2)
    assert code == EXIT_FILE, err


@LINUX_ONLY
async def test_token_path_that_is_a_device_is_refused_without_a_traceback(tmp_path: Path) -> None:
    code, err = await run_cli(
        free_port(), tmp_path, "--token_path", "/dev/zero", "--message", "hi", shell_prefix="ulimit -v 1048576;"
    )
    assert "Traceback" not in err, err
    assert code == EXIT_FILE, err


async def test_concurrent_registrations_on_one_token_path_lose_no_account(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both start while no token is saved, as two senders started at once do; then both register.
    first = settings_at(server.write_port, tmp_path, "--nickname", "Eve")
    second = settings_at(server.write_port, tmp_path, "--nickname", "Bob")
    for settings in (first, second):
        with suppress(ChatError):
            await send_client.send(settings, io.BytesIO(b""), RecordingDelays())
    assert len(server.accounts) == 2
    saved = (tmp_path / "token.txt").read_text().strip()
    shown = capsys.readouterr().err
    lost = [token for token in server.accounts if token != saved and token not in shown]
    assert not lost, f"registered, then neither saved nor shown: {lost}"


async def test_registration_reply_cut_before_its_newline_keeps_the_token(tmp_path: Path) -> None:
    new_token = "11111111-74ca-11e9-9d4f-0242ac110002"

    async def register_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await reader.readline()
        writer.write(NICKNAME_PROMPT)
        await reader.readline()
        writer.write(f'{{"nickname": "Boring Eve", "account_hash": "{new_token}"}}'.encode())
        await writer.drain()

    async with scripted_server(register_then_hang_up) as port:
        with suppress(ChatError):
            await send_client.send(settings_at(port, tmp_path, "--nickname", "Eve"), io.BytesIO(b""), RecordingDelays())
    token_file = tmp_path / "token.txt"
    assert token_file.exists() and token_file.read_text().strip() == new_token


# --- 1. the stream ----------------------------------------------------------------------


async def test_stream_with_nothing_to_post_ends_while_the_server_is_down(tmp_path: Path) -> None:
    settings = settings_at(free_port(), tmp_path, "--token", TOKEN, "--message", "-")
    await asyncio.wait_for(send_client.send(settings, io.BytesIO(b"\n  \n"), RecordingDelays()), 2)


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
        task = asyncio.ensure_future(send_client.send(settings, io.BytesIO(line), RecordingDelays()))
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


# --- 3. one stdin line, one post --------------------------------------------------------


async def test_invisible_only_stdin_line_is_skipped(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    settings = settings_at(server.write_port, tmp_path, "--token", TOKEN, "--message", "-")
    await send_client.send(settings, io.BytesIO("\ufe0f\u034f\ufe0e\nreal\n".encode()), RecordingDelays())
    assert [post.lines for post in server.posts] == [["real"]]


# --- 7. signals -------------------------------------------------------------------------


@LINUX_ONLY
async def test_ctrl_c_works_while_stderr_is_not_read(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    read_end, write_end = os.pipe()
    # stdin an OS pipe too: asyncio's own would make Process.wait() wait for it to close.
    stdin_read, stdin_write = os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1", "--port", str(server.write_port),
        "--token", TOKEN, "--message", "-", "-v",
        cwd=tmp_path, env=client_env(), stdin=stdin_read, stdout=subprocess.DEVNULL, stderr=write_end,
    )  # fmt: skip
    os.close(write_end)
    os.close(stdin_read)
    try:
        os.write(stdin_write, b"".join(b"line %d\n" % number for number in range(3000)))
        buffered = bytearray(4)

        async def pipe_full() -> None:
            while True:
                fcntl.ioctl(read_end, termios.FIONREAD, buffered)
                # Half full is plenty: the pipe takes whole pages, so small writes may never fill it to the brim.
                if struct.unpack("i", buffered)[0] >= PIPE_CAPACITY // 2:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(pipe_full(), WAIT * 3)
        code = await stop_with_signal(process, signal.SIGINT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(read_end)
        os.close(stdin_write)
    assert code == 130  # stop_with_signal allows STOP_WAIT seconds
