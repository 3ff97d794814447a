"""The witness's matching, from tables, without sockets: which posts the chat has shown."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_server import ConnectionPlan, FakeMinechatServer
from helpers import (
    TOKEN,
    WAIT,
    RecordingDelays,
    free_port,
    run_sender,
    settings_at,
    settings_for,
    streaming_sender,
    texts_of,
    wait_for_log,
    wait_for_state,
)

import chat_io
import send_client
from _minechat.outbox import Outbox, Post
from _minechat.sender_settings import SenderSettings
from _minechat.witness import CHAT_LINE_LIMIT, ChatWitness, Witness

NICKNAME = "Focused Loyd"
REPLY_TIMEOUT = 10.0


def shown_by(witness: Witness, outbox: Outbox, data: bytes) -> list[Post]:
    """Feed the witness chat bytes and tell the outbox of the posts they show, as the sender does."""
    shown = witness.feed(data)
    for post in shown:
        outbox.note_shown(post)
    return shown


def posts_of(*texts: str) -> list[Post]:
    """Return posts as the outbox makes them, escaping included."""
    outbox = Outbox()
    return [outbox.add(text) for text in texts]


def witness_for(posts: list[Post], nickname: str = NICKNAME, memory: int = 4096) -> Witness:
    witness = Witness(REPLY_TIMEOUT, memory)
    witness.set_nickname(nickname)
    for post in posts:
        witness.expect(post)
    return witness


@pytest.mark.parametrize(
    ("texts", "chat", "seen"),
    [
        # Our nickname and the text as sent: seen.
        (["hi"], b"Focused Loyd: hi\n", [0]),
        # Another author, or another text, or a line cut short: not ours.
        (["hi"], b"Boring Eve: hi\nFocused Loyd: hi!\nFocused Loyd: h", []),
        # Identical texts: a doubled echo of one looks like the next one's, so neither is taken as shown.
        (["hi", "hi", "hi"], b"Focused Loyd: hi\nFocused Loyd: hi\n", []),
        # Out of order echoes on one connection cannot all be ours: nothing is taken as shown.
        (["one", "two"], b"Focused Loyd: two\nEva: one\nFocused Loyd: one\n", []),
        # In order, among others' lines: each is ours.
        (["one", "two"], b"Focused Loyd: one\nEva: two\nFocused Loyd: two\n", [0, 1]),
        # The text as we sent it: escaped line breaks show escaped.
        (["a\nb"], b"Focused Loyd: a b\n", [0]),
        # Cyrillic, split anywhere, and a nickname with spaces.
        (["привет"], "Focused Loyd: привет\n".encode(), [0]),
        # A line that only ends with our text is not ours.
        (["hi"], b"Eva: Focused Loyd: hi\n", []),
        # The server's join notice is never one of our posts, even of the same text.
        (["# к чату присоединился Focused"], "Server: # к чату присоединился Focused\n".encode(), []),
    ],
)
def test_matching(texts: list[str], chat: bytes, seen: list[int]) -> None:
    outbox = Outbox()
    posts = [outbox.add(text) for text in texts]
    witness = witness_for(posts)
    shown = []
    for index in range(len(chat)):  # byte by byte: a line split anywhere is matched once, whole
        shown += shown_by(witness, outbox, chat[index : index + 1])
    assert shown == [posts[index] for index in seen]
    assert [post.seen for post in posts] == [index in seen for index in range(len(posts))]
    assert witness.matched == len(seen)


def test_an_echo_is_never_matched_twice() -> None:
    outbox = Outbox()
    post = outbox.add("hi")
    witness = witness_for([post])
    assert shown_by(witness, outbox, b"Focused Loyd: hi\n") == [post]
    assert shown_by(witness, outbox, b"Focused Loyd: hi\n") == []  # shown more often than sent: a doubling chat
    assert witness.doubt == "shows one of our posts more often than we sent it"
    later = outbox.add("later")
    witness.expect(later)
    assert witness.feed(b"Focused Loyd: later\n") == []  # no witness any more: it is sent again if need be


def test_lines_before_the_nickname_is_known_are_not_matched() -> None:
    [post] = posts_of("hi")
    witness = Witness(REPLY_TIMEOUT)
    witness.expect(post)
    assert witness.feed(b"Focused Loyd: hi\n") == []
    witness.set_nickname(NICKNAME)
    assert witness.feed(b"Focused Loyd: hi\n") == [post]


def test_after_a_new_chat_connection_nothing_sent_before_is_awaited() -> None:
    [post] = posts_of("hi")
    witness = witness_for([post])
    witness.reset()  # the chat hung up: a new connection shows only what comes after it
    later = posts_of("later")[0]
    witness.expect(later)
    assert witness.feed(b"Focused Loyd: later\n") == [later]  # the old send, no longer awaited, is skipped
    assert witness.feed(b"Focused Loyd: hi\n") == []  # an echo of before is no evidence


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    posts = posts_of("one", "two", "three")
    witness = witness_for(posts, memory=2)
    chat = b"Focused Loyd: one\nFocused Loyd: two\nFocused Loyd: three\n"
    assert witness.feed(chat) == [posts[1], posts[2]]  # the forgotten one's echo is excused, not matched


MORE_OFTEN = "shows one of our posts more often than we sent it"
NOT_OURS = "shows lines under our nickname that we did not send"
OUT_OF_ORDER = "shows our posts out of the order we sent them in"


def play(script: str, memory: int = 4096) -> tuple[list[int], str | None]:
    """Run a script through a witness; return the numbers of the posts it saved, and its doubt.

    '|' starts a posting connection, '+x' sends a new post x, '~x' sends one before the chat is watched,
    '^n' sends post n again, '=x' is the chat showing 'Focused Loyd: x'.
    """
    outbox = Outbox()
    witness = Witness(REPLY_TIMEOUT, memory)
    witness.set_nickname(NICKNAME)
    posts: list[Post] = []
    saved: list[Post] = []
    for step in script.split():
        kind, text = step[0], step[1:]
        if kind == "|":
            witness.next_connection()
        elif kind in "+~":
            posts.append(outbox.add(text))
            (witness.expect if kind == "+" else witness.note_unwatched)(posts[-1])
        elif kind == "^":
            witness.expect(posts[int(text)])
        else:
            saved += shown_by(witness, outbox, f"{NICKNAME}: {text}\n".encode())
    return [posts.index(post) for post in saved], witness.doubt


@pytest.mark.parametrize(
    ("script", "memory", "saved", "doubt"),
    [
        # Two posts of one text, each shown once: neither saved, and no doubt (each echo is one send's).
        ("| +x +x =x =x", 4096, [], None),
        ("| +x +x =x =x", 2, [], None),  # memory enough for both: the first's text still counts
        # Posts sent before the chat was watched: each may show once, and once only.
        ("~x ~x =x =x", 4096, [], None),
        ("~x ~x =x =x =x", 4096, [], MORE_OFTEN),
        # A post sharing its text with one sent before the chat was watched is never saved.
        ("~a ~x | +x =x", 4096, [], None),
        # Sends forgotten for memory may still show, once each; a later send of the same post is saved.
        ("| +x | ^0 | ^0 =x =x =x", 1, [0], None),
        ("| +x | ^0 | ^0 =x =x =x =x", 1, [0], MORE_OFTEN),
        # A send lost with its connection is skipped by the next connection's echo.
        ("| +a | +b =b", 4096, [1], None),
        ("| +a +b =b", 4096, [], OUT_OF_ORDER),
        ("| +a =z", 4096, [], NOT_OURS),
        # A post sent again shares its text with the later one: neither echo saves the later one.
        ("| +x +y +z +x ^0 =x", 2, [], None),
        # A post resent after its text was forgotten for memory is still saved by its echo.
        ("| +x +y ^0 +z =x", 2, [0], None),
        # Texts beyond memory no longer stop a later post's echo from saving it; those within it still do.
        ("| +x =x +x =x +z =z +x =x", 2, [0, 2, 3], None),
        ("| +x =x +x =x +x =x +z =z +x =x", 3, [0, 3], None),
        ("| +x =x +x =x +z =z =x", 2, [0, 2], MORE_OFTEN),  # the second x is still remembered
    ],
)
def test_counts_and_memory(script: str, memory: int, saved: list[int], doubt: str | None) -> None:
    assert play(script, memory) == (saved, doubt)


@pytest.mark.parametrize(
    ("script", "memory"),
    [
        ("| +x +x =x", 1),
        ("| +x +y | +x =x", 2),
        ("| +x +x ^0 =x", 1),  # forgotten sends of two posts: the echo may be the second's, not the awaited first's
    ],
)
def test_the_late_echo_of_a_send_forgotten_for_memory_never_saves_a_later_post_of_its_text(
    script: str, memory: int
) -> None:
    # The chat lags more than `memory` sends behind, then shows the first post: it proves nothing (expect()
    # says so); taken as the later post's, that one was never sent again, though it may have been lost.
    assert play(script, memory) == ([], None)


def test_a_seen_post_is_not_resent_by_the_outbox() -> None:
    outbox = Outbox()
    posts = [outbox.add(text) for text in ("one", "two", "three")]
    witness = witness_for([])
    for post in outbox.take_unsent():
        witness.expect(post)
    shown_by(witness, outbox, b"Focused Loyd: one\nFocused Loyd: two\n")
    assert outbox.rewind() == 1
    assert outbox.take_unsent() == [posts[2]]
    assert (outbox.seen_only, outbox.delivered, outbox.repeated) == (2, 2, 1)


def test_a_post_seen_while_waiting_to_be_resent_is_dropped() -> None:
    outbox = Outbox()
    post = outbox.add("one")
    outbox.take_unsent()
    outbox.rewind()
    outbox.note_shown(post)  # the echo came late, after the connection was lost
    assert outbox.take_unsent() == []
    assert not outbox and outbox.delivered == 1


# --- the witness at work, against the fake server -------------------------------------------------


def watching_settings(server: FakeMinechatServer, tmp_path: Path, *argv: str) -> SenderSettings:
    """Settings aimed at the fake server's posting port, watching its reading port."""
    return settings_for(server, tmp_path, "--token", TOKEN, *argv, watch=True)


@pytest.mark.usefixtures("account")
async def test_a_post_seen_in_the_chat_is_not_sent_again(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    # The first connection takes "two" and hangs up before acknowledging it.
    server.plans.append(ConnectionPlan(posts=1, take_unacked=True))
    sender = await run_sender(watching_settings(server, tmp_path, "--message", "one", "--message", "two"))
    assert texts_of(server) == ["one", "two"]
    assert all(post.readers == 1 for post in server.posts)  # the witness was there before the first post
    assert (sender.outbox.acknowledged, sender.outbox.seen_only, sender.outbox.repeated) == (1, 1, 0)
    assert (
        caplog.records[-1].getMessage() == "posted 2 messages as Focused Loyd (1 acknowledged, 1 only seen in the chat)"
    )


@pytest.mark.usefixtures("account")
async def test_identical_texts_are_sent_again_rather_than_taken_as_seen(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.plans.append(ConnectionPlan(posts=1, take_unacked=True))
    messages = ["--message", "same", "--message", "same", "--message", "same"]
    sender = await run_sender(watching_settings(server, tmp_path, *messages))
    # The chat showed "same" twice, which a chat doubling the first would show too: the second is sent
    # again (a copy, reported) rather than perhaps lost.
    assert texts_of(server) == ["same"] * 4
    assert texts_of(server, acknowledged_only=True) == ["same"] * 3
    assert (sender.outbox.acknowledged, sender.outbox.seen_only, sender.outbox.repeated) == (3, 0, 2)


@pytest.mark.usefixtures("account")
async def test_a_slow_server_gets_posts_seen_in_the_chat_once(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.ack_delay = 0.3
    settings = watching_settings(server, tmp_path, "--message", "-", "--reply-timeout", "0.2")
    sender = await run_sender(settings, b"one\ntwo\nthree\n")
    copies = Counter(texts_of(server))
    assert copies["one"] == 1  # seen before its acknowledgement was given up on: never sent again
    assert set(copies) == {"one", "two", "three"} and max(copies.values()) <= 2
    assert sender.outbox.delivered == 3


@pytest.mark.usefixtures("account")
async def test_an_unreachable_chat_is_said_once_and_posting_goes_on(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    closed_port = free_port()
    base = ["--host", "127.0.0.1", "--port", str(server.write_port), "--read-port", str(closed_port)]
    settings = send_client.parse_settings([*base, "--token", TOKEN, "--message", "-"], {}, tmp_path)
    await run_sender(settings, b"one\ntwo\n")
    assert texts_of(server) == ["one", "two"]
    said = [record for record in caplog.records if "(--read-port)" in record.getMessage()]
    assert [record.levelno for record in said] == [logging.INFO]
    assert said[0].getMessage() == (
        f"cannot read the chat on 127.0.0.1:{closed_port} (--read-port) to see which posts arrived: "
        f"{os.strerror(errno.ECONNREFUSED)}; going on without it"
    )


@pytest.mark.usefixtures("account")
async def test_an_unreachable_chat_is_only_a_debug_line_for_a_single_message(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    base = ["--host", "127.0.0.1", "--port", str(server.write_port), "--read-port", str(free_port())]
    await run_sender(send_client.parse_settings([*base, "--token", TOKEN, "--message", "hi"], {}, tmp_path))
    said = [record.levelno for record in caplog.records if "(--read-port)" in record.getMessage()]
    assert said == [logging.DEBUG]


@pytest.mark.usefixtures("account")
async def test_a_chat_that_never_shows_our_posts_is_said_once(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    server.echo_posts = False
    stdin = b"".join(f"post {number}\n".encode() for number in range(5))
    sender = send_client.make_sender(
        watching_settings(server, tmp_path, "--message", "-", "--reply-timeout", "0.1"),
        SlowStdin(stdin),
        RecordingDelays(),
    )
    await asyncio.wait_for(sender.run(), WAIT)
    said = [record.getMessage() for record in caplog.records if "does not show our posts" in record.getMessage()]
    assert said == [
        f"the chat on 127.0.0.1:{server.read_port} does not show our posts as '<nickname>: <text>'; going on without it"
    ]


class SlowStdin(io.RawIOBase):
    """Stdin that gives one line, then the rest after a pause longer than the witness's grace."""

    PAUSE = 0.3

    def __init__(self, data: bytes) -> None:
        self._first, _, self._rest = data.partition(b"\n")
        self._first += b"\n"
        self._calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._calls += 1
        if self._calls == 1:
            return self._first
        if self._calls == 2:
            threading.Event().wait(self.PAUSE)  # this runs in the stdin thread, not the loop
            return self._rest
        return b""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
@pytest.mark.usefixtures("account")
async def test_cancelled_while_the_witness_connects_leaves_nothing_running(
    server: FakeMinechatServer, tmp_path: Path, unanswered_port: int
) -> None:
    # A reading port that never answers: the witness waits up to --connect-timeout, unless cancelled.
    # Posting does not wait for the witness: a posting port that never greets holds the run up.
    with socket.create_server(("127.0.0.1", 0)) as mute:
        mute.setblocking(False)
        base = ["--host", "127.0.0.1", "--port", str(mute.getsockname()[1]), "--read-port", str(unanswered_port)]
        settings = send_client.parse_settings([*base, "--token", TOKEN, "--message", "-"], {}, tmp_path)
        sender = send_client.make_sender(settings, io.BytesIO(b"one\n"), RecordingDelays())
        before = asyncio.all_tasks()
        task = asyncio.ensure_future(sender.run())
        # The witness starts connecting before the posting connection does: once that one is here, the
        # witness is inside its connect, which lasts its 10 s timeout.
        posting, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(mute), WAIT)
        with posting:
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, settings.connect_timeout / 2)  # not held up by the connect
            assert asyncio.all_tasks() - before == set()
    assert server.posts == []


# --- the witness's connection to the chat: made, lost, made again ---------------------------------------


async def start_witness(
    settings: SenderSettings, outbox: Outbox, wake: Callable[[], None] = lambda: None
) -> ChatWitness:
    """Start a witness of the chat for the outbox's posts, as the sender does before its first post."""
    witness = ChatWitness(settings, logging.INFO, outbox, wake)
    witness.set_nickname(NICKNAME)
    await witness.start()
    witness.next_connection()
    return witness


async def watched(server: FakeMinechatServer, witness: ChatWitness) -> None:
    """Wait until the witness reads the chat and the server counts it among its readers."""
    await wait_for_state(lambda: witness.active and len(server.readers) == 1)


def send(witness: ChatWitness, outbox: Outbox, text: str) -> Post:
    """Send a new post as the sender does: out of the outbox, its send told to the witness."""
    post = outbox.add(text)
    outbox.take_unsent()
    witness.expect(outbox.take_sends())
    return post


@pytest.mark.parametrize("how", ["closes", "resets"])
async def test_a_chat_that_hangs_up_is_left_until_the_next_connection_watches_it_again(
    server: FakeMinechatServer, tmp_path: Path, how: str
) -> None:
    witness = await start_witness(watching_settings(server, tmp_path), Outbox())
    try:
        await watched(server, witness)
        await (server.drop_readers() if how == "closes" else server.reset_readers())
        await wait_for_state(lambda: not witness.active)  # it stops reading a connection that is gone
        assert witness.lost
        await witness.start()  # as the next posting connection does
        await watched(server, witness)
        assert not witness.lost and server.reader_connections == 2
    finally:
        await witness.stop()


async def test_a_post_sent_while_the_chat_was_lost_does_not_hide_a_later_one_of_its_text(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    outbox = Outbox()
    witness = await start_witness(watching_settings(server, tmp_path), outbox)
    try:
        await watched(server, witness)
        await server.drop_readers()
        await wait_for_state(lambda: witness.lost and not witness.active)
        first = send(witness, outbox, "hi")  # nobody watches: its echo can never come
        outbox.acknowledge()
        await witness.start()
        witness.next_connection()
        await watched(server, witness)
        second = send(witness, outbox, "hi")
        await server.broadcast(f"{NICKNAME}: hi\n".encode())
        await wait_for_state(lambda: second.seen)  # the only "hi" the chat can show now
        assert not first.seen
    finally:
        await witness.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_a_post_sent_while_the_chat_connects_may_show_and_saves_nothing(
    tmp_path: Path, unanswered_port: int
) -> None:
    settings = settings_at(free_port(), tmp_path, "--read-port", str(unanswered_port), "--token", TOKEN)
    outbox = Outbox()
    witness = await start_witness(settings, outbox)  # connecting for --connect-timeout
    try:
        send(witness, outbox, "hi")
        witness.note_acknowledged()
        assert not witness.active
        # The first echo's clock starts once the chat is watched, not while it connects.
        later = asyncio.get_running_loop().time() + 2 * settings.reply_timeout
        assert witness.core.patience(later) == settings.reply_timeout
        # The chat, once connected, may show the post or not: shown, it is excused, and saves nothing.
        assert witness.core.feed(f"{NICKNAME}: hi\n".encode()) == []
        assert witness.core.doubt is None
    finally:
        await witness.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_a_chat_port_that_never_answers_is_given_up_after_the_connect_timeout(
    tmp_path: Path, unanswered_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    argv = ("--read-port", str(unanswered_port), "--connect-timeout", "0.2", "--token", TOKEN)
    settings = settings_at(free_port(), tmp_path, *argv)
    witness = await start_witness(settings, Outbox())
    try:
        # WAIT is 25 times --connect-timeout here, and half the default one.
        await wait_for_log(caplog, lambda message: "(--read-port)" in message)
    finally:
        await witness.stop()
    said = [record.getMessage() for record in caplog.records if "(--read-port)" in record.getMessage()]
    assert said == [
        f"cannot read the chat on 127.0.0.1:{unanswered_port} (--read-port) to see which posts arrived: timed out; "
        "going on without it"
    ]


@pytest.mark.usefixtures("account")
async def test_a_chat_connection_that_stays_up_serves_every_posting_connection(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.idle_timeout = 0.3  # the posting connection goes idle and is dropped between the lines
    async with streaming_sender(watching_settings(server, tmp_path, "--message", "-")) as (stdin, _, task):
        await stdin.write(b"one\n")
        await server.wait_until(lambda: [post.acknowledged for post in server.posts] == [True])
        await server.wait_until(lambda: server.idle_drops == 1)
        await stdin.write(b"two\n")
        stdin.end()
        await asyncio.wait_for(task, WAIT)
    assert texts_of(server) == ["one", "two"]
    assert [post.readers for post in server.posts] == [1, 1]
    assert server.reader_connections == 1  # not made again for the second posting connection


@pytest.mark.usefixtures("account")
async def test_a_chat_that_is_no_witness_is_said_once_and_hung_up_on(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="send_client")
    server.shown_as = lambda nickname, text: [f"{nickname}: {text}", f"{nickname}: what's up"]  # an impostor
    async with streaming_sender(watching_settings(server, tmp_path, "--message", "-")) as (stdin, _, task):
        await stdin.write(b"one\n")
        await wait_for_log(caplog, lambda message: "cannot tell which posts arrived" in message)
        await server.wait_until(lambda: not server.readers)  # it reads that chat no more
        await stdin.write(b"two\n")
        stdin.end()
        await asyncio.wait_for(task, WAIT)
    said = [record.getMessage() for record in caplog.records if "cannot tell" in record.getMessage()]
    assert said == [
        f"the chat on 127.0.0.1:{server.read_port} shows lines under our nickname that we did not send, "
        "so it cannot tell which posts arrived; posts not acknowledged are sent again"
    ]
    assert [post.readers for post in server.posts] == [1, 0]


async def test_posts_only_the_chat_showed_go_again_once_it_turns_out_to_be_no_witness(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another sender under our nickname posts our text: its echo settles our lost post, and only a later
    # copy shows the chat is no witness. Two sender processes of one account met this under load.
    caplog.set_level(logging.INFO, logger="send_client")
    outbox = Outbox()
    woken = asyncio.Event()
    witness = await start_witness(watching_settings(server, tmp_path), outbox, woken.set)
    try:
        await watched(server, witness)
        post = send(witness, outbox, "two")
        await server.broadcast(f"{NICKNAME}: two\n".encode())
        await wait_for_state(lambda: post.seen)
        outbox.rewind()  # its connection is lost before the acknowledgement: the chat alone settles it
        assert not outbox and outbox.seen_only == 1
        await server.broadcast(f"{NICKNAME}: two\n".encode())  # shown more often than we sent it
        await asyncio.wait_for(woken.wait(), WAIT)
        assert outbox.take_unsent() == [post]  # sent again: a reported copy, never a lost post
        assert outbox.seen_only == 0
    finally:
        await witness.stop()
    said = [record.getMessage() for record in caplog.records if "cannot tell" in record.getMessage()]
    assert said == [
        f"the chat on 127.0.0.1:{server.read_port} shows one of our posts more often than we sent it, so it "
        "cannot tell which posts arrived; posts not acknowledged are sent again, and 1 message it alone had shown"
    ]


# --- what a chat line or a second send can pass for ------------------------------------------------------


def test_a_chat_line_too_long_to_be_ours_never_shows_one_of_our_posts() -> None:
    [post] = posts_of("hi")
    witness = witness_for([post])
    # Padded so that a reader cutting lines into 64 KiB pieces would find "Focused Loyd: hi" starting one.
    forged = b"Eva: " + b"x" * (64 * 1024 - len(b"Eva: ")) + b"Focused Loyd: hi\n"
    assert witness.feed(forged) == []  # never taken for our post: it would then never be sent again
    assert witness.feed(b"Focused Loyd: hi\n") == [post]


def test_a_long_post_of_ours_is_recognised_whole() -> None:
    [post] = posts_of("слово " * 20_000)  # 240 KB: far over 64 KiB, well within a stdin line's 1 MiB
    witness = witness_for([post])
    echo = f"{NICKNAME}: ".encode() + post.data[:-1]
    shown = [seen for start in range(0, len(echo), 4096) for seen in witness.feed(echo[start : start + 4096])]
    assert shown == [post]


def test_a_chat_line_of_exactly_the_limit_can_show_our_post() -> None:
    prefix = f"{NICKNAME}: ".encode()
    [post] = posts_of("x" * (CHAT_LINE_LIMIT - len(prefix) - len(b"\n")))
    echo = prefix + post.data[:-1]
    assert len(echo) == CHAT_LINE_LIMIT
    witness = witness_for([post])
    shown = [seen for start in range(0, len(echo), 64 * 1024) for seen in witness.feed(echo[start : start + 64 * 1024])]
    assert shown == [post]


def test_the_end_of_a_chat_line_over_the_limit_never_passes_for_a_line_of_its_own() -> None:
    [post] = posts_of("hi")
    witness = witness_for([post])
    assert witness.feed(b"Eva: " + b"x" * CHAT_LINE_LIMIT) == []  # over the limit, its end not come yet
    assert witness.feed(b"Focused Loyd: hi\n") == []  # the end of Eva's line, not our post
    assert witness.doubt is None
    assert witness.feed(b"Focused Loyd: hi\n") == [post]


def test_each_send_of_a_post_owes_its_own_echo() -> None:
    # "same" went out on a connection that was lost, went out again, and a second "same" after it. The
    # chat shows "same" twice: both may be the first post's, so the second post is not seen.
    witness = witness_for([])
    outbox = Outbox()
    first = outbox.add("same")
    outbox.take_unsent()
    outbox.rewind()
    second = outbox.add("same")
    assert outbox.take_unsent() == [first, second]
    for post in outbox.take_sends():
        witness.expect(post)
    shown_by(witness, outbox, b"Focused Loyd: same\nFocused Loyd: same\n")
    # Either echo may be the first post's: neither is taken as shown, and both are sent again if need be.
    assert not first.seen
    assert not second.seen  # else it would never be sent again, though the server may never have taken it


@pytest.mark.usefixtures("account")
async def test_a_slow_server_whose_chat_shows_our_posts_gets_each_line_once(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    # Every acknowledgement comes later than --reply-timeout, but the chat shows each post at once: the
    # server is slow, not gone. Hanging up on it would send again what it is still working through.
    server.ack_delay = 0.5
    settings = watching_settings(server, tmp_path, "--message", "-", "--reply-timeout", "0.3")
    sender = await run_sender(settings, b"one\ntwo\nthree\n")
    assert texts_of(server) == ["one", "two", "three"]
    assert sender.outbox.delivered == 3 and sender.outbox.repeated == 0


@pytest.mark.usefixtures("account")
async def test_a_chat_connection_lost_midway_is_made_again_with_the_next_connection(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    # A long stream outlives many connections: a chat that hung up once is not given up for the rest of it.
    server.idle_timeout = 0.3  # the posting connection goes idle and is dropped between the lines
    async with streaming_sender(watching_settings(server, tmp_path, "--message", "-")) as (stdin, _, task):
        await stdin.write(b"one\n")
        await server.wait_until(lambda: [post.acknowledged for post in server.posts] == [True])
        await server.drop_readers()
        await server.wait_until(lambda: server.idle_drops == 1)
        await stdin.write(b"two\n")
        stdin.end()
        await asyncio.wait_for(task, WAIT)
    assert texts_of(server) == ["one", "two"]
    assert [post.readers for post in server.posts] == [1, 1]  # watched again before "two" went out
    assert server.reader_connections == 2


@pytest.mark.usefixtures("account")
async def test_in_process_senders_of_the_tests_never_watch_whatever_listens_on_port_5000(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    # The public chat's port may be anyone's on a shared machine (the README starts a fake server there):
    # a test that does not give --read-port must not depend on what answers there.
    accepted: list[object] = []

    async def count(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.close()

    try:
        listener = await asyncio.start_server(count, "127.0.0.1", chat_io.DEFAULT_READ_PORT)
    except OSError:
        pytest.skip("port 5000 is taken here")
    async with listener:
        base = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", TOKEN]
        settings = send_client.parse_settings([*base, "--message", "one", "--message", "two"], {}, tmp_path)
        await run_sender(settings)
    assert texts_of(server) == ["one", "two"]
    assert accepted == []


# --- how long the witness is trusted, from tables ------------------------------------------------------


@pytest.mark.parametrize(
    ("first_ack_at", "chat", "now", "patience"),
    [
        (None, b"", 50.0, REPLY_TIMEOUT),  # nothing acknowledged yet: look again every reply timeout
        (100.0, b"", 104.0, REPLY_TIMEOUT - 4.0),  # the first acknowledgement started the clock
        (100.0, b"", 100.0 + REPLY_TIMEOUT, 0.0),  # a reply timeout without our post: no witness
        (100.0, b"Focused Loyd: hi\n", 500.0, None),  # it showed one of ours: trusted from then on
        (100.0, b"Eva: hi\n", 100.0 + 2 * REPLY_TIMEOUT, -REPLY_TIMEOUT),  # others' lines prove nothing
    ],
)
def test_the_chat_is_a_witness_until_a_reply_timeout_after_the_first_acknowledgement_passes_without_our_posts(
    first_ack_at: float | None, chat: bytes, now: float, patience: float | None
) -> None:
    outbox = Outbox()
    witness = witness_for([outbox.add("hi")])
    if first_ack_at is not None:
        witness.note_acknowledged(first_ack_at)
        witness.note_acknowledged(first_ack_at + 1.0)  # only the first acknowledgement starts the clock
    shown_by(witness, outbox, chat)
    assert witness.patience(now) == patience


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
@pytest.mark.usefixtures("account")
async def test_a_firewalled_chat_port_never_delays_posting(
    server: FakeMinechatServer, tmp_path: Path, unanswered_port: int
) -> None:
    # A reading port whose SYNs go unanswered (a listener with a full backlog): connecting to it takes the
    # whole --connect-timeout (10 s by default), and posting must not wait for that.
    base = ["--host", "127.0.0.1", "--port", str(server.write_port), "--read-port", str(unanswered_port)]
    settings = send_client.parse_settings([*base, "--token", TOKEN, "--message", "hi"], {}, tmp_path)
    started = asyncio.get_running_loop().time()
    await run_sender(settings)
    elapsed = asyncio.get_running_loop().time() - started
    assert texts_of(server) == ["hi"]
    assert elapsed < settings.connect_timeout / 2
