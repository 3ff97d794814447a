"""The chat as a witness: which of our posts the reading port has shown (sans-IO), and the connection that reads it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import NamedTuple

from _minechat.outbox import Outbox, Post
from _minechat.sender_settings import SenderSettings
from _minechat.shutdown import cancel_and_wait
from chat_io import NEWLINE, READ_CHUNK_BYTES, ChatError, describe_error, format_address, open_connection, plural

# The sender's log: -v and the tests listen to it under the script's name.
logger = logging.getLogger("send_client")

# Posts remembered while their echo is awaited; beyond this the oldest is forgotten (memory stays bounded
# if the chat never shows some of them).
WITNESS_MEMORY = 4096
ECHO_SEPARATOR = b": "
# A chat line longer than this is skipped whole: none of our posts (at most a 1 MiB stdin line) makes
# one, and a piece of it must never pass for a line of its own, which could show one of our posts.
CHAT_LINE_LIMIT = 1024 * 1024 + 4096


def echo_text(post: Post) -> bytes:
    """Return what the chat shows after '<nickname>: ' for a post, newline included."""
    return post.data[: -len(NEWLINE)]  # the post's one line, without the empty line that ends it


class Send(NamedTuple):
    """One send of a post, on the posting connection of that number: each may show once in the chat."""

    post: Post
    connection: int
    text: bytes  # what the chat shows after '<nickname>: '


class Witness:
    """Matches chat lines of the form '<nickname>: <text>' with our posts, and saves one only when sure.

    A lost post is worse than a reported copy, so a line saves a post from being sent again only when
    nothing else can explain it. Each send is awaited once, in order: an echo on a connection means every
    earlier send on it arrived too. A post sharing its text with an earlier one of ours is never saved
    (a doubled echo of the other looks the same). And once the chat shows under our nickname a line we
    did not send, a second echo, or echoes out of order (another author with our nickname, or a chat that
    trims, collapses, cuts or doubles lines), it is no witness any more: every unacknowledged post is sent again.
    """

    def __init__(self, reply_timeout: float, memory: int = WITNESS_MEMORY) -> None:
        self._reply_timeout = reply_timeout
        self._memory = memory
        self._first_ack_at: float | None = None
        self._prefix: bytes | None = None
        self._buffer = bytearray()  # the unfinished chat line
        self._skipping = False  # inside a chat line too long to be ours
        self._waiting: dict[bytes, deque[Send]] = {}
        self._order: deque[Send] = deque()  # every send awaiting its echo, oldest first
        self._texts: dict[bytes, int] = {}  # how many of our posts (not sends) had each text
        self._counted: deque[Post] = deque()  # those posts, oldest first, to keep the memory bounded
        self._counted_set: set[Post] = set()
        self._unwatched: Counter[bytes] = Counter()  # sends no longer awaited (sent unwatched, forgotten): excused
        self._unwatched_post: dict[bytes, Post | None] = {}  # the one post those sends of a text were of, or None
        self._connection = 0
        self.matched = 0  # echoes that surely showed one of our posts
        self.doubt: str | None = None  # why the chat is no witness any more, once it is not

    def set_nickname(self, nickname: str) -> None:
        """Learn the nickname the server shows our posts under."""
        self._prefix = nickname.encode() + ECHO_SEPARATOR

    def next_connection(self) -> None:
        """Note that the posts sent from now on go out on a new posting connection."""
        self._connection += 1

    def expect(self, post: Post) -> None:
        """Await one more echo of a post that has just gone out (again)."""
        if len(self._order) >= self._memory:
            oldest = self._order[0]
            self._forget(oldest)
            self._excuse(oldest.post, oldest.text)  # its echo may still come, and proves nothing
        text = echo_text(post)
        send = Send(post, self._connection, text)
        self._order.append(send)
        waiting = self._waiting.get(text)
        if waiting is None:
            self._waiting[text] = deque((send,))
        else:
            waiting.append(send)
        self._remember(post, text)

    def note_unwatched(self, post: Post) -> None:
        """Note a post sent while the chat was not watched yet: its echo may still come, and is no evidence."""
        text = echo_text(post)
        self._excuse(post, text)
        self._remember(post, text)

    def _excuse(self, post: Post, text: bytes) -> None:
        """Let one more echo of a text show without proving anything, and note which post it may be of."""
        self._unwatched[text] += 1
        owner = self._unwatched_post.get(text, post)
        self._unwatched_post[text] = owner if owner is post else None

    def _use_excuse(self, text: bytes) -> None:
        """Take one excused echo of a text off the count."""
        self._unwatched[text] -= 1
        if not self._unwatched[text]:
            del self._unwatched[text], self._unwatched_post[text]

    def reset(self) -> None:
        """Await no echo any more: the chat connection is gone, and a new one shows only posts made after it."""
        self._waiting.clear()
        self._order.clear()
        self._unwatched.clear()
        self._unwatched_post.clear()
        self._buffer.clear()
        self._skipping = False

    def note_acknowledged(self, now: float) -> None:
        """Start the clock for the first echo once the server has taken a post."""
        # Echoes of the post's other sends stay awaited: they must not pass for a later post's.
        if self._first_ack_at is None:
            self._first_ack_at = now

    def patience(self, now: float) -> float | None:
        """Return how long to read before looking again: None once trusted, at most 0 once it is no witness.

        Once the chat has shown one of our posts, it is trusted. Until then, once the server has taken a
        post and a reply timeout has passed without the chat showing it, the chat is no witness.
        """
        if self.matched:
            return None
        if self._first_ack_at is None:
            return self._reply_timeout
        return self._first_ack_at + self._reply_timeout - now

    def feed(self, data: bytes) -> list[Post]:
        """Take bytes from the reading port; return the posts they surely show, not seen before, in order.

        The outbox, told of them, marks them seen: the witness only reads that mark.
        """
        lines = self._frame(data)
        if self._prefix is None:
            return []
        seen: dict[Post, None] = {}  # ordered, and each post once though two of its sends show in one read
        for line in lines:
            post = self._match(line)
            if post is not None and self.doubt is None:
                seen[post] = None
        return list(seen)

    def _frame(self, data: bytes) -> list[bytes]:
        """Split the chat's bytes into whole lines, newline included, skipping any too long to be ours."""
        lines = []
        start = 0
        while (end := data.find(NEWLINE, start)) >= 0:
            if not self._skipping:
                self._buffer += data[start : end + 1]
                if len(self._buffer) <= CHAT_LINE_LIMIT:
                    lines.append(bytes(self._buffer))
            self._buffer.clear()
            self._skipping = False
            start = end + 1
        if not self._skipping:
            self._buffer += data[start:]
            if len(self._buffer) > CHAT_LINE_LIMIT:
                self._buffer.clear()
                self._skipping = True
        return lines

    def _match(self, line: bytes) -> Post | None:
        """Return the post a chat line surely shows, if any; note any doubt it raises."""
        assert self._prefix is not None
        if not line.startswith(self._prefix) or self.doubt is not None:
            return None
        text = line[len(self._prefix) :]
        waiting = self._waiting.get(text)
        if text in self._unwatched and not (waiting and self._unwatched_post[text] is waiting[0].post):
            # Maybe the echo of a send we no longer await, and of another post of this text than the
            # awaited one: it proves nothing, and taken for the awaited post it could lose that one.
            self._use_excuse(text)
            return None
        if not waiting:
            if self._texts.get(text):
                self.doubt = "shows one of our posts more often than we sent it"
            else:
                self.doubt = "shows lines under our nickname that we did not send"
            return None
        send = waiting[0]
        if self._skips_an_earlier_send(send):
            self.doubt = "shows our posts out of the order we sent them in"
            return None
        self._forget(send)
        if send.post.seen or self._texts.get(text, 0) > 1:
            return None  # shown already, or another post of ours with this text may be what shows
        self.matched += 1
        return send.post

    def _skips_an_earlier_send(self, send: Send) -> bool:
        """Tell whether an earlier send on the same connection still awaits its echo; forget older ones."""
        while self._order and self._order[0] is not send:
            earlier = self._order[0]
            if earlier.connection == send.connection:
                return True
            self._forget(earlier)  # lost with its connection before the server took it
        return False

    def _remember(self, post: Post, text: bytes) -> None:
        """Count a post's text once, however often the post is sent."""
        counted = self._counted_set
        if post in counted:
            return
        counted.add(post)
        self._counted.append(post)
        texts = self._texts
        texts[text] = texts.get(text, 0) + 1
        if len(self._counted) > self._memory:
            oldest = self._counted.popleft()
            counted.discard(oldest)
            old_text = echo_text(oldest)
            if texts[old_text] > 1:
                texts[old_text] -= 1
            else:
                del texts[old_text]

    def _forget(self, send: Send) -> None:
        order = self._order
        if order[0] is send:
            order.popleft()
        else:
            order.remove(send)
        waiting = self._waiting[send.text]
        if waiting[0] is send:
            waiting.popleft()
        else:
            waiting.remove(send)
        if not waiting:
            del self._waiting[send.text]


class ChatWitness:
    """Reads the chat while we post and tells the outbox of the posts it shows, so they are never sent again."""

    def __init__(self, settings: SenderSettings, level: int, outbox: Outbox, wake: Callable[[], None]) -> None:
        self.settings = settings
        self.level = level  # how loud "going on without it" is: debug for a single message
        self.outbox = outbox
        self.wake = wake  # tells the posting side that posts are to go out again
        self.core = Witness(settings.reply_timeout)
        self.active = False
        self.lost = False  # it watched, then the chat hung up: it is connected again with the next connection
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start connecting to the reading port, without waiting: the witness is an aid, posting never waits for it.

        The connection is made while the posting one logs in, which takes longer; a post sent before
        it is made is not watched, and so is sent again if its acknowledgement does not come.
        """
        if self._task is not None:  # an earlier connection, ended: it reported its own end
            await self.stop()
        self.lost = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop reading the chat."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)  # what it raised is retrieved; _run reports its own failures

    def expect(self, posts: list[Post]) -> None:
        """Await one more echo of each post that has just gone out (each send may show)."""
        if self.active:
            for post in posts:
                self.core.expect(post)
        elif self._task is not None and not self._task.done():  # still connecting: an echo may yet come
            for post in posts:
                self.core.note_unwatched(post)

    def next_connection(self) -> None:
        """Note that what is sent from now on goes out on a new posting connection."""
        self.core.next_connection()

    def note_acknowledged(self) -> None:
        """Start the clock for the first echo once the server has taken a post."""
        if self.active and not self.core.matched:  # once trusted, the clock no longer matters
            self.core.note_acknowledged(asyncio.get_running_loop().time())

    def set_nickname(self, nickname: str) -> None:
        """Learn the nickname the chat shows our posts under."""
        self.core.set_nickname(nickname)

    def _lose(self) -> None:
        """The chat hung up: nothing sent from now on can show to us, until it is connected again."""
        self.lost = True
        self.core.reset()  # no echo of what was sent meanwhile can come on a new connection

    def _say(self, text: str) -> None:
        logger.log(self.level, "%s; going on without it", text)

    async def _run(self) -> None:
        settings = self.settings
        where = format_address(settings.host, settings.read_port)
        try:
            async with open_connection(settings.host, settings.read_port, settings.connect_timeout) as (reader, _):
                self.active = True
                logger.debug("watching the chat on %s for our posts", where)
                await self._watch(reader, where)
        except ChatError as error:
            reason = describe_error(error.__cause__) if error.__cause__ is not None else str(error)
            self._say(f"cannot read the chat on {where} (--read-port) to see which posts arrived: {reason}")
        finally:
            self.active = False

    async def _watch(self, reader: asyncio.StreamReader, where: str) -> None:
        loop = asyncio.get_running_loop()
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                patience = self.core.patience(loop.time())
                if patience is not None and patience <= 0:
                    self._say(f"the chat on {where} does not show our posts as '<nickname>: <text>'")
                    return
                if reading is None:
                    reading = asyncio.ensure_future(reader.read(READ_CHUNK_BYTES))
                # asyncio.wait, not wait_for: before Python 3.12 wait_for swallows a cancellation that
                # comes as the read completes, and a chat with data always ready then never stops.
                await asyncio.wait({reading}, timeout=patience)
                if not reading.done():
                    continue  # look again: the chat may have stopped being a witness meanwhile
                done, reading = reading, None
                if not self._take(done, where):
                    return
        finally:
            if reading is not None:
                await cancel_and_wait(reading)  # what it raised is retrieved: the chat connection is going away

    def _take(self, done: asyncio.Future[bytes], where: str) -> bool:
        """Take what a read of the chat brought; False once the chat connection is gone."""
        try:
            chunk = done.result()
        except OSError as error:
            logger.debug("the chat connection broke: %s; watching again with the next connection", error)
            self._lose()
            return False
        if not chunk:
            logger.debug("the chat on %s closed the connection; watching again with the next connection", where)
            self._lose()
            return False
        for post in self.core.feed(chunk):
            logger.debug("the chat shows message %d", post.number)
            self.outbox.note_shown(post)
        if self.core.doubt is not None:
            # What it alone settled may have been another sender's line: sent again, it is a reported copy
            # at worst, where trusting it could lose it.
            recalled = self.outbox.recall_seen()
            if recalled:
                self.wake()
            # Not a warning: nothing is lost, posts not acknowledged are only sent again.
            logger.info(
                "the chat on %s %s, so it cannot tell which posts arrived; posts not acknowledged are sent again%s",
                where,
                self.core.doubt,
                f", and {plural(recalled, 'message')} it alone had shown" if recalled else "",
            )
            return False
        return True


class NoWitness:
    """Stands in for the witness when nothing will be posted: it watches nothing and sees nothing."""

    lost = False

    async def start(self) -> None:
        """Watch nothing."""

    async def stop(self) -> None:
        """Stop nothing."""

    def expect(self, posts: list[Post]) -> None:
        """Await no echo."""

    def next_connection(self) -> None:
        """Count nothing."""

    def note_acknowledged(self) -> None:
        """Time nothing."""

    def set_nickname(self, nickname: str) -> None:
        """Learn nothing."""
