"""The chat as a witness, sans-IO: which of our posts has the reading port shown, as "<nickname>: <text>"?"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from _minechat.dialogue import Post
from chat_io import NEWLINE

# How long after a post is acknowledged its echo may still come. Past that, a witness that has never
# shown one of our posts is blind (the chat shows them in another shape, or not at all).
ECHO_WAIT = 60.0
# At most this many echoes are waited for at once; past that the oldest acknowledged ones are forgotten.
MAX_EXPECTED = 8192
# A chat line longer than this is skipped: none of our posts (at most 1 MiB from stdin) makes one.
CHAT_LINE_LIMIT = 1024 * 1024 + 4096
# The digest a post's text is known by: it reaches the chat, and a digest costs little to keep.
DIGEST_BYTES = 16
CARRIAGE_RETURN = b"\r"


def digest(text: bytes) -> bytes:
    """Return the short fingerprint a post's text is matched by."""
    return hashlib.blake2b(text, digest_size=DIGEST_BYTES).digest()


@dataclass(eq=False)
class Expected:
    """One echo the chat owes us: one send of a post, made while we watched."""

    key: bytes
    post: Post | None  # None once the post is settled: its echo is then only absorbed
    due: float | None = None  # when it must have come, counted from the post's settling


class Witness:
    """Matches the chat's lines against our posts: one echo per send, identical texts in order.

    Told what is sent and what is settled (acknowledged, seen, or given up), and fed the chat's bytes,
    it hands out each post the chat shows, the first time. A witness that shows none of our posts
    within ECHO_WAIT of an acknowledgement is blind, and watches no more.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        echo_wait: float | None = None,
        max_expected: int = MAX_EXPECTED,
    ) -> None:
        self._clock = clock
        self._echo_wait = echo_wait
        self._max_expected = max_expected
        self._prefix: bytes | None = None
        self._connected = False
        self._by_key: dict[bytes, deque[Expected]] = {}
        self._by_post: dict[int, list[Expected]] = {}
        self._due: deque[Expected] = deque()  # settled posts' echoes, soonest due first
        self._pending = 0
        self._buffer = bytearray()
        self._skipping = False  # inside a chat line too long to be ours
        self.proven = False  # it has shown one of our posts
        self.blind = False

    @property
    def watching(self) -> bool:
        """Tell whether the chat is read now and our posts can be recognised in it."""
        return self._connected and self._prefix is not None and not self.blind

    def now(self) -> float:
        """Return the time on the witness's clock."""
        return self._clock()

    @property
    def next_due(self) -> float | None:
        """Return when the next echo waited for falls due (on the clock given), if any is."""
        return self._due[0].due if self._due else None

    @property
    def pending(self) -> int:
        """Return how many echoes are waited for."""
        return self._pending

    def connect(self) -> None:
        """The chat is read from now on."""
        self._connected = True

    def disconnect(self) -> None:
        """The chat connection is gone: no echo of what was sent meanwhile can reach us any more."""
        self._connected = False
        self._forget()

    def know(self, nickname: str) -> None:
        """Take the nickname the server gave us: our posts show as "<nickname>: <text>"."""
        prefix = nickname.encode() + b": "
        if prefix != self._prefix:
            self._prefix = prefix
            self._forget()

    def sent(self, post: Post) -> None:
        """Note that post was just written to the server: the chat may show it once more."""
        if not self.watching:
            return
        expected = Expected(digest(post.data[: -2 * len(NEWLINE)]), post)
        self._by_key.setdefault(expected.key, deque()).append(expected)
        self._by_post.setdefault(post.number, []).append(expected)
        self._pending += 1

    def settled(self, post: Post) -> None:
        """Note that post is settled: its echoes must come within ECHO_WAIT, or they are not waited for."""
        expectations = self._by_post.pop(post.number, None)
        if expectations:
            due = self._clock() + self._wait()
            for expected in expectations:
                expected.post, expected.due = None, due
                self._due.append(expected)
        self.check()

    def receive_data(self, data: bytes) -> list[Post]:
        """Take bytes the chat sent; return the posts they show for the first time, in order."""
        shown = []
        for line in self._frame(data):
            post = self._match(line)
            if post is not None:
                shown.append(post)
        self.check()
        return shown

    def check(self) -> bool:
        """Forget echoes past due, judge the witness blind if it never showed one of ours; return blind."""
        now = self._clock()
        while self._due and (self._due[0].due or 0) <= now:
            if self._drop(self._due.popleft()) and not self.proven:
                self.blind = True
                self._forget()
        while self._pending > self._max_expected and self._due:
            self._drop(self._due.popleft())  # too many at once: the oldest settled ones go first
        return self.blind

    def _wait(self) -> float:
        # Looked up at each use, so a test can shorten it.
        return ECHO_WAIT if self._echo_wait is None else self._echo_wait

    def _frame(self, data: bytes) -> list[bytes]:
        """Split the chat's bytes into whole lines, skipping any far too long to be one of ours."""
        lines = []
        start = 0
        while True:
            end = data.find(NEWLINE, start)
            if end < 0:
                break
            if not self._skipping:
                self._buffer += data[start:end]
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
        """Take one chat line; return the post it shows for the first time, if any."""
        if self._prefix is None or not line.startswith(self._prefix):
            return None
        key = digest(line[len(self._prefix) :].removesuffix(CARRIAGE_RETURN))
        waiting = self._by_key.get(key)
        if not waiting:
            return None
        expected = waiting.popleft()
        if not waiting:
            del self._by_key[key]
        self._pending -= 1
        self.proven = True
        post = expected.post
        if post is None:
            return None  # an echo of a post shown or settled already: it keeps a later identical post from taking it
        expectations = self._by_post[post.number]
        expectations.remove(expected)
        for other in expectations:
            other.post = None  # its other sends may show too, but it is news only once
        if not expectations:
            del self._by_post[post.number]
        return post

    def _drop(self, expected: Expected) -> bool:
        """Stop waiting for one echo; tell whether it was still awaited."""
        waiting = self._by_key.get(expected.key)
        if not waiting or expected not in waiting:
            return False
        waiting.remove(expected)
        if not waiting:
            del self._by_key[expected.key]
        self._pending -= 1
        return True

    def _forget(self) -> None:
        self._by_key.clear()
        self._by_post.clear()
        self._due.clear()
        self._pending = 0
