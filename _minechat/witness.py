"""The chat as a witness, without any I/O: which of our posts the reading port has shown."""

from __future__ import annotations

from collections import deque

from _minechat.outbox import Post
from chat_io import NEWLINE

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


class Witness:
    """Matches chat lines of the form '<nickname>: <text>' with our posts: one echo per send, in order.

    A post sent twice may show twice, so each send is awaited: a second echo of one post is not taken
    for a later post of the same text, which would then never be sent, though it may never have arrived.
    """

    def __init__(self, memory: int = WITNESS_MEMORY) -> None:
        self._memory = memory
        self._prefix: bytes | None = None
        self._buffer = bytearray()  # the unfinished chat line
        self._skipping = False  # inside a chat line too long to be ours
        self._waiting: dict[bytes, deque[Post]] = {}
        self._order: deque[Post] = deque()  # every post awaiting its echo, oldest first
        self.matched = 0

    def __len__(self) -> int:
        return len(self._order)

    def set_nickname(self, nickname: str) -> None:
        """Learn the nickname the server shows our posts under."""
        self._prefix = nickname.encode() + ECHO_SEPARATOR

    def expect(self, post: Post) -> None:
        """Await one more echo of a post that has just gone out (again)."""
        if len(self._order) >= self._memory:
            self._forget(self._order[0])
        self._order.append(post)
        self._waiting.setdefault(echo_text(post), deque()).append(post)

    def reset(self) -> None:
        """Await no echo any more: the chat connection is gone, and a new one shows only posts made after it."""
        self._waiting.clear()
        self._order.clear()
        self._buffer.clear()
        self._skipping = False

    def forget(self, post: Post) -> None:
        """Stop awaiting the oldest echo still awaited of a post."""
        if post in self._order:
            self._forget(post)

    def feed(self, data: bytes) -> list[Post]:
        """Take bytes from the reading port; return the posts they show for the first time, in order."""
        lines = self._frame(data)
        if self._prefix is None:
            return []
        seen = []
        for line in lines:
            post = self._match(line)
            if post is not None:
                seen.append(post)
        return seen

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
        assert self._prefix is not None
        if not line.startswith(self._prefix):
            return None
        waiting = self._waiting.get(line[len(self._prefix) :])
        if not waiting:
            return None
        post = waiting[0]
        self._forget(post)
        self.matched += 1
        if post.seen:
            return None  # the echo of another send of a post shown already: no news, and no one else's
        post.seen = True
        return post

    def _forget(self, post: Post) -> None:
        self._order.remove(post)
        key = echo_text(post)
        waiting = self._waiting[key]
        waiting.remove(post)
        if not waiting:
            del self._waiting[key]
