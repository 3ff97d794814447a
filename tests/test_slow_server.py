"""A slow or failing server, mostly without the chat as witness: waits that lengthen, posts given up, honest
counts, resends a few at a time, and 300 lines through connections cut at random."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, RecordingDelays
from fake_server import FakeMinechatServer
from send_support import TOKEN, StdinPipe, closed_port, settings_for, texts_of, wait_for

import send_client

NICKNAME = "Focused Loyd"


@pytest.fixture
async def account(server: FakeMinechatServer) -> str:
    return server.add_account(NICKNAME, TOKEN)


@pytest.fixture
def unwatched() -> Iterator[int]:
    """A reading port that refuses: these senders go without the chat as witness."""
    with closed_port() as port:
        yield port


@pytest.fixture
def stdin_pipe() -> Iterator[StdinPipe]:
    pipe = StdinPipe()
    yield pipe
    pipe.close()


def infos(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == level]


def first_appearances(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


# --- a reply timeout lengthens the next wait ---------------------------------------------------


async def test_late_acknowledgements_lengthen_the_wait_and_the_stream_ends(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int
) -> None:
    server.ack_delay = 0.6  # every acknowledgement later than --reply-timeout
    lines = ["one", "two", "three"]
    argv = ["--token", account, "--message", "-", "--reply-timeout", "0.4"]
    settings = settings_for(server, tmp_path, *argv, read_port=unwatched)
    stdin = "".join(f"{line}\n" for line in lines).encode()
    sender = send_client.make_sender(settings, StdinBytes(stdin), RecordingDelays())  # type: ignore[arg-type]
    await asyncio.wait_for(sender.run(), WAIT * 2)
    # One reply timeout, then a wait of 0.8 s that the 0.6 s acknowledgements fit in: two connections.
    assert len(server.send_transcripts) == 2
    assert first_appearances(texts_of(server)) == lines
    assert sender.outbox.delivered == 3


async def test_acknowledgements_on_time_start_the_wait_over(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int, stdin_pipe: StdinPipe
) -> None:
    argv = ["--token", account, "--message", "-", "--reply-timeout", "0.4"]
    settings = settings_for(server, tmp_path, *argv, read_port=unwatched)
    sender = send_client.make_sender(settings, stdin_pipe.reader, RecordingDelays())
    task = asyncio.ensure_future(sender.run())
    try:
        server.ack_delay = 0.6
        await stdin_pipe.write(b"slow\n")  # times out once; the wait doubles to 0.8 s
        await wait_for(lambda: sender.outbox.delivered == 1)
        server.ack_delay = None
        await stdin_pipe.write(b"quick\n")  # on time: the wait is back to 0.4 s
        await wait_for(lambda: sender.outbox.delivered == 2)
        server.ack_delay = 0.6
        await stdin_pipe.write(b"slow again\n")  # so this one times out again, once
        stdin_pipe.end()
        await asyncio.wait_for(task, WAIT * 2)
    finally:
        task.cancel()
    assert first_appearances(texts_of(server)) == ["slow", "quick", "slow again"]
    assert len(server.send_transcripts) == 3
    assert texts_of(server).count("quick") == 1


class StdinBytes:
    """A stdin with no descriptor: the bytes given, then its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk
