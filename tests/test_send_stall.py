"""A stream whose outbox filled up goes on however its posts leave it: acknowledged, seen in the chat, given up."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import TOKEN, RecordingDelays, StdinPipe, settings_for

import send_client
from _minechat.outbox import OUTBOX_POSTS
from _minechat.sender_settings import SenderSettings

LINES = 2000  # the measure: more than the outbox's 1,024 posts
STREAM_WAIT = 20.0  # generous: a stalled stream never ends at all


def stream_settings(server: FakeMinechatServer, tmp_path: Path, *argv: str) -> SenderSettings:
    """Settings for a stream from stdin to the fake server's posting port, watching its reading port."""
    return settings_for(server, tmp_path, "--token", TOKEN, "--message", "-", *argv, watch=True)


async def stream_lines(
    server: FakeMinechatServer, tmp_path: Path, *argv: str, mend_after: int = 0
) -> send_client.Sender:
    """Pipe LINES numbered lines at once, ended, and run the sender until it ends.

    Once the server has taken mend_after posts, it acknowledges posts again.
    """
    stdin = StdinPipe()
    sender = send_client.make_sender(stream_settings(server, tmp_path, *argv), stdin.reader, RecordingDelays())
    task = asyncio.ensure_future(sender.run())
    try:
        await stdin.write(b"".join(f"line {number}\n".encode() for number in range(LINES)))
        stdin.end()
        if mend_after:
            await server.wait_until(lambda: len(server.posts) >= mend_after, timeout=STREAM_WAIT)
            server.withhold_acks = False
        await asyncio.wait_for(asyncio.shield(task), STREAM_WAIT)
    finally:
        task.cancel()
        stdin.close()
    return sender


pytestmark = pytest.mark.usefixtures("account")  # conftest's: Focused Loyd, with TOKEN


@pytest.mark.slow
async def test_a_full_outbox_settled_from_the_chat_after_a_drop_lets_the_stream_go_on(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    # The server takes and shows the whole outbox, then hangs up before a single acknowledgement.
    server.drop_after_unacked = OUTBOX_POSTS
    sender = await stream_lines(server, tmp_path)
    assert Counter(" | ".join(post.lines) for post in server.posts) == {f"line {n}": 1 for n in range(LINES)}
    assert (sender.outbox.seen_only, sender.outbox.acknowledged) == (OUTBOX_POSTS, LINES - OUTBOX_POSTS)


@pytest.mark.slow
async def test_a_full_outbox_never_acknowledged_but_shown_lets_the_stream_go_on(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    # The first connection takes and shows the whole outbox and never acknowledges a post of it.
    server.withhold_acks = True
    sender = await stream_lines(server, tmp_path, "--reply-timeout", "0.1", mend_after=OUTBOX_POSTS)
    assert Counter(" | ".join(post.lines) for post in server.posts) == {f"line {n}": 1 for n in range(LINES)}
    assert (sender.outbox.seen_only, sender.outbox.acknowledged) == (OUTBOX_POSTS, LINES - OUTBOX_POSTS)
