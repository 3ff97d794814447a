"""Every stop stops: a chat port that always has data ready never holds up a signal or the end of a stream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import POSIX_ONLY, START_WAIT, TOKEN, client_process, free_port, stop_with_signal

from chat_io import EXIT_CONNECTION

TRIES = 4  # the stop was lost in about one try in three on Python 3.10 and 3.11
# A lost stop was found by the witness only once the chat had not shown our posts for the reply timeout:
# with a minute of it, a lost stop takes a minute, and a stop may take 10 s on a busy machine (0.2 s idle).
REPLY_TIMEOUT = "60"
QUICK = 10.0


@pytest.fixture
def flooded(server: FakeMinechatServer) -> FakeMinechatServer:
    server.add_account("Focused Loyd", TOKEN)
    server.flood_readers = True
    return server


@asynccontextmanager
async def streaming(server: FakeMinechatServer, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A sender relaying stdin while it watches the flooded chat, yielded once its first post is in."""
    async with client_process(
        "send_client.py", "--token", TOKEN, "--message", "-", "--read-port", str(server.read_port),
        "--reply-timeout", REPLY_TIMEOUT, port=server.write_port, cwd=tmp_path, stdin=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(b"one\n")
        await process.stdin.drain()
        await server.wait_until(lambda: any(post.acknowledged for post in server.posts), timeout=START_WAIT)
        yield process


@POSIX_ONLY
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("attempt", range(TRIES))
async def test_a_signal_stops_a_sender_watching_a_flooding_chat(
    flooded: FakeMinechatServer, tmp_path: Path, signum: int, attempt: int
) -> None:
    async with streaming(flooded, tmp_path) as process:
        code = await stop_with_signal(process, signum, timeout=QUICK)
    assert code != -signal.SIGKILL, f"still running {QUICK} s after the signal: killed"


@pytest.mark.parametrize("attempt", range(TRIES))
async def test_a_stream_that_ends_exits_at_once_however_busy_the_chat(
    flooded: FakeMinechatServer, tmp_path: Path, attempt: int
) -> None:
    async with streaming(flooded, tmp_path) as process:
        assert process.stdin is not None
        started = time.monotonic()
        process.stdin.close()
        code = await asyncio.wait_for(process.wait(), QUICK)
    assert code == 0
    assert time.monotonic() - started < QUICK


@pytest.mark.parametrize("attempt", range(TRIES))
async def test_a_refused_posting_port_exits_at_once_however_busy_the_chat(
    flooded: FakeMinechatServer, tmp_path: Path, attempt: int
) -> None:
    async with client_process(
        "send_client.py", "--token", TOKEN, "--message", "hi", "--read-port", str(flooded.read_port),
        "--reply-timeout", REPLY_TIMEOUT, port=free_port(), cwd=tmp_path,
    ) as process:  # fmt: skip
        # Its start-up is in this wait too: twice QUICK, still far under the reply timeout a lost stop takes.
        code = await asyncio.wait_for(process.wait(), 2 * QUICK)
    assert code == EXIT_CONNECTION
