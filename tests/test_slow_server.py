"""A slow or failing server, mostly without the chat as witness: waits that lengthen, posts given up, honest
counts, resends a few at a time, and 300 lines through connections cut at random."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, RecordingDelays
from fake_server import ConnectionPlan, CuttingProxy, FakeMinechatServer
from send_support import TOKEN, StdinPipe, closed_port, run_client, settings_for, texts_of, wait_for

import send_client
from _minechat.dialogue import RESEND_WINDOW
from chat_io import BACKOFF_CAP, BACKOFF_INITIAL, EXIT_CONNECTION, EXIT_OK, backoff

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
    server.ack_delay = 0.55  # every acknowledgement later than --reply-timeout
    lines = ["one", "two", "three"]
    argv = ["--token", account, "--message", "-", "--reply-timeout", "0.4"]
    settings = settings_for(server, tmp_path, *argv, read_port=unwatched)
    stdin = "".join(f"{line}\n" for line in lines).encode()
    sender = send_client.make_sender(settings, StdinBytes(stdin), RecordingDelays())  # type: ignore[arg-type]
    await asyncio.wait_for(sender.run(), WAIT * 2)
    # One reply timeout, then a wait of 0.8 s that the 0.55 s acknowledgements fit in: two connections.
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
        server.ack_delay = 0.55
        await stdin_pipe.write(b"slow\n")  # times out once; the wait doubles to 0.8 s
        await wait_for(lambda: sender.outbox.delivered == 1)
        server.ack_delay = None
        await stdin_pipe.write(b"quick\n")  # on time: the wait is back to 0.4 s
        await wait_for(lambda: sender.outbox.delivered == 2)
        server.ack_delay = 0.55
        await stdin_pipe.write(b"slow again\n")  # so this one times out again, once
        stdin_pipe.end()
        await asyncio.wait_for(task, WAIT * 2)
    finally:
        task.cancel()
    assert first_appearances(texts_of(server)) == ["slow", "quick", "slow again"]
    assert len(server.send_transcripts) == 3
    assert texts_of(server).count("quick") == 1


async def test_a_trickled_acknowledgement_is_waited_for_after_one_timeout(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int
) -> None:
    server.ack_trickle = 0.7  # the acknowledgement's bytes trickle in over 0.7 s: a whole line takes that long
    argv = ["--token", account, "--message", "only", "--reply-timeout", "0.5"]
    code, _, err = await run_client(server, tmp_path, *argv, "--read-port", str(unwatched), stdin=None)
    assert code == EXIT_OK, err
    assert texts_of(server) == ["only", "only"]
    assert (
        "posted 1 message as Focused Loyd; 1 message was sent more than once, so the chat may show it up to 2 times"
        in err
    )


# --- a post sent three times without an acknowledgement is given up ---------------------------


async def test_a_post_sent_three_times_without_an_acknowledgement_is_given_up_and_the_stream_goes_on(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    # Three connections take "stuck" and hang up without acknowledging it; then normal service.
    server.plans.extend(ConnectionPlan(posts=0, take_unacked=True) for _ in range(3))
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-", read_port=unwatched)
    sender = send_client.make_sender(settings, StdinBytes(b"stuck\nnext\n"), RecordingDelays())  # type: ignore[arg-type]
    await asyncio.wait_for(sender.run(), WAIT)
    assert texts_of(server) == ["stuck", "stuck", "stuck", "next"]  # never a fourth time
    assert texts_of(server, acknowledged_only=True) == ["next"]
    warnings = infos(caplog, logging.WARNING)
    assert (
        "message 1 got no acknowledgement in 3 tries; it is not sent again (it may have reached the chat)" in warnings
    )
    # "next" went out with "stuck" on every connection, so it may show up to four times.
    assert warnings[-1] == (
        "posted 1 message as Focused Loyd; 2 messages were sent more than once, so the chat may show one of them up "
        "to 4 times; 1 message was not sent again after 3 tries without an acknowledgement: it may have reached "
        "the chat"
    )


async def test_a_fixed_message_never_acknowledged_is_sent_three_times_then_exit_3(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int
) -> None:
    server.withhold_acks = True
    argv = ["--token", account, "--message", "hello", "--reply-timeout", "0.2", "--read-port", str(unwatched)]
    code, _, err = await run_client(server, tmp_path, *argv, stdin=None)
    assert code == EXIT_CONNECTION, err
    assert texts_of(server) == ["hello"] * 3
    [error] = [line for line in err.splitlines() if " ERROR " in line]
    assert error.endswith(
        "posted 0 messages as Focused Loyd; 1 message was sent more than once, so the chat may show it up to 3 times; "
        "1 message was not sent again after 3 tries without an acknowledgement: it may have reached the chat"
    )
    assert "Traceback" not in err


# --- honest counts ----------------------------------------------------------------------------


async def test_the_summary_counts_messages_not_sends(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    # "one" acknowledged and "two" taken unacknowledged; then a connection that takes nothing.
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True), ConnectionPlan(posts=0)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    settings = settings_for(server, tmp_path, "--token", account, *messages, read_port=unwatched)
    sender = send_client.make_sender(settings, None, RecordingDelays())
    await asyncio.wait_for(sender.run(), WAIT)
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    # Two messages went out three times each (the second connection took neither): four sends more,
    # two messages more than once.
    assert infos(caplog)[-1] == (
        "posted 3 messages as Focused Loyd; 2 messages were sent more than once, so the chat may show one of them "
        "up to 3 times"
    )


# --- after a lost connection, resends go out a few at a time ---------------------------------------


async def test_resends_go_out_a_few_at_a_time(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int
) -> None:
    lines = [f"post {number}" for number in range(20)]
    server.plans.append(ConnectionPlan(posts=0))  # the first connection takes nothing: all 20 are to go again
    server.ack_gate = asyncio.Event()  # the next takes posts but holds their acknowledgements back
    argv = ["--token", account, "--message", "-", "--reply-timeout", "0.3"]
    settings = settings_for(server, tmp_path, *argv, read_port=unwatched)
    stdin = StdinBytes("".join(f"{line}\n" for line in lines).encode())
    sender = send_client.make_sender(settings, stdin, RecordingDelays())  # type: ignore[arg-type]
    task = asyncio.ensure_future(sender.run())
    try:
        # The second connection ends when the sender stops waiting for the first acknowledgement:
        # by then it has written everything it was going to write on it.
        await server.wait_until(lambda: server.senders_done >= 2, timeout=WAIT)
        assert texts_of(server) == lines[:RESEND_WINDOW]
        server.ack_gate.set()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert first_appearances(texts_of(server)) == lines
    assert sender.outbox.delivered == len(lines)


# --- the goal: 300 lines through connections cut after 0-3,000 bytes -------------------------------

LINES = 300
CUT_BYTES = 3000
# The goal is 90 s with the real delays; the test scales every delay by a tenth, and so the goal.
SCALE = 0.1
GOAL_SECONDS = 90 * SCALE
MOST_DUPLICATES = 2


async def post_through_cuts(
    server: FakeMinechatServer, tmp_path: Path, account: str, seed: int, read_port: int
) -> tuple[send_client.Sender, float, CuttingProxy]:
    """Post LINES lines from stdin through a proxy that cuts each connection after 0-3,000 bytes, at scale."""
    rng = random.Random(seed)
    lines = [f"line {number} — строка {number}" for number in range(LINES)]
    async with CuttingProxy(server.write_port, lambda: rng.randint(0, CUT_BYTES)) as proxy:
        base = ["--host", "127.0.0.1", "--port", str(proxy.port), "--read-port", str(read_port)]
        settings = send_client.parse_settings(
            [*base, "--token", account, "--message", "-", "--token_path", str(tmp_path / "token.txt")], {}, tmp_path
        )
        stdin = StdinBytes("".join(f"{line}\n" for line in lines).encode())
        sender = send_client.make_sender(  # type: ignore[arg-type]
            settings, stdin, lambda: backoff(initial=BACKOFF_INITIAL * SCALE, cap=BACKOFF_CAP * SCALE)
        )
        started = time.monotonic()
        await asyncio.wait_for(sender.run(), GOAL_SECONDS * 2)
        elapsed = time.monotonic() - started
    assert first_appearances(texts_of(server)) == lines  # nothing lost, nothing out of order
    assert proxy.cuts >= 10  # the faults did happen
    return sender, elapsed, proxy


@pytest.mark.parametrize("seed", [1, 2])
async def test_300_lines_through_a_proxy_that_cuts_connections_at_random(
    server: FakeMinechatServer, tmp_path: Path, account: str, seed: int
) -> None:
    _, elapsed, proxy = await post_through_cuts(server, tmp_path, account, seed, server.read_port)
    duplicates = len(server.posts) - LINES
    assert duplicates <= MOST_DUPLICATES, f"{duplicates} duplicates over {proxy.cuts} cuts"
    assert elapsed < GOAL_SECONDS, f"{elapsed:.1f} s over {proxy.connections} connections"


async def test_300_lines_through_cuts_without_the_witness_do_not_stall_and_are_counted_honestly(
    server: FakeMinechatServer, tmp_path: Path, account: str, unwatched: int
) -> None:
    # Without the chat to tell what arrived, every post a cut leaves unacknowledged goes again; a few
    # at a time, acknowledgements come back between cuts and the delays start over.
    sender, elapsed, proxy = await post_through_cuts(server, tmp_path, account, 3, unwatched)
    assert elapsed < GOAL_SECONDS, f"{elapsed:.1f} s over {proxy.connections} connections"
    taken = texts_of(server)
    copies = {line: taken.count(line) for line in set(taken)}
    # The summary's counts are upper bounds of what the chat shows.
    assert max(copies.values()) <= sender.outbox.most_sends
    assert sum(1 for count in copies.values() if count > 1) <= sender.outbox.repeated


class StdinBytes:
    """A stdin with no descriptor: the bytes given, then its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk
