"""The sender's outbox without any I/O: the posts not yet settled, oldest first, and how often each went out."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from operator import attrgetter

from _minechat.dialogue import encode_post

# The outbox holds at most this many posts or bytes (but always one post): all that a stalled or
# absent server can cost us in memory, however long it stays away. While it is full, stdin waits.
OUTBOX_POSTS = 1024
OUTBOX_BYTES = 16 * 1024 * 1024
# A post whose acknowledgement timed out, or whose connection was lost while it was due, this many
# times is not sent again: the server takes it and keeps quiet or hangs up, or is too slow for us, and
# each copy may show in everybody's chat.
MAX_SENDS = 3
# After a lost connection, posts go out at most this many at a time until those lost in flight are
# through: a connection that drops again soon costs a few copies at most, and acknowledgements come
# back between drops. Then posts go as fast as they come again, even with more still queued.
RESEND_WINDOW = 4
# Posts settled by the chat alone that a later doubt about the chat can still send again; older ones
# stay settled (the chat had that long to show it is no witness).
RECALLABLE_POSTS = 4096


@dataclass(eq=False)
class Post:
    """One message on its way: its number in this run, its bytes on the wire, and how often it went out."""

    number: int
    data: bytes
    sends: int = 0
    timeouts: int = 0  # connections given up or lost while this post waited for its acknowledgement
    seen: bool = False  # the chat showed it: it arrived, acknowledged or not
    acknowledged: bool = False


class Outbox:
    """Posts not yet acknowledged, oldest first; knows which of them went out on the current connection."""

    def __init__(self, max_posts: int = OUTBOX_POSTS, max_bytes: int = OUTBOX_BYTES) -> None:
        self.max_posts = max_posts
        self.max_bytes = max_bytes
        self._sent: deque[Post] = deque()
        self._unsent: deque[Post] = deque()
        self._bytes = 0
        self._rewound = 0  # posts at the head of _unsent that went out on an earlier connection
        self._window: int | None = None  # how many posts may be in flight; None: as many as there are
        self._catch_up_to = 0  # the last post lost in flight: once it is settled, the window opens again
        self.added = 0
        self.acknowledged = 0
        self.repeated = 0  # messages sent more than once
        self.most_copies = 0  # the most times one message went out
        self.doubtful = 0  # messages given up after MAX_SENDS sends: they may have reached the chat, or not
        self.seen_only = 0  # messages the chat showed that the server never acknowledged
        self.shown = 0  # posts the chat has shown while they awaited their acknowledgement
        self._sends: list[Post] = []  # posts sent since take_sends was last asked, each time it went out
        self._settled_by_chat: deque[Post] = deque(maxlen=RECALLABLE_POSTS)

    def __len__(self) -> int:
        return len(self._sent) + len(self._unsent)

    @property
    def full(self) -> bool:
        """Tell whether no more posts may be added for now."""
        return len(self) >= self.max_posts or self._bytes >= self.max_bytes

    @property
    def roomy(self) -> bool:
        """Tell whether the outbox has drained to half; refilling slot by slot would mean tiny writes."""
        return len(self) <= self.max_posts // 2 and self._bytes <= self.max_bytes // 2

    @property
    def oldest_sent(self) -> Post | None:
        """Return the post whose acknowledgement is due next, if any."""
        return self._sent[0] if self._sent else None

    @property
    def has_unsent(self) -> bool:
        """Tell whether some post still has to go out on this connection."""
        return bool(self._unsent)

    @property
    def rewound(self) -> int:
        """Return how many posts went out on an earlier connection and are still to be sent again."""
        return self._rewound

    def add(self, text: str) -> Post:
        """Queue a message as the next post."""
        data = encode_post(text)
        self.added += 1
        post = Post(self.added, data)
        self._unsent.append(post)
        self._bytes += len(data)
        return post

    @property
    def delivered(self) -> int:
        """Return how many messages reached the chat: acknowledged, or shown in it."""
        return self.acknowledged + self.seen_only

    def take_unsent(self) -> list[Post]:
        """Return the posts to send now, in order, and count them as sent; posts the chat showed are dropped.

        While posts of an earlier connection are resent, at most RESEND_WINDOW are in flight.
        """
        posts = []
        while self._unsent and not self._window_full(len(posts)):
            post = self._unsent.popleft()
            if self._rewound:
                self._rewound -= 1
            if post.seen:
                self._settle_seen(post)
                self._widen_window(post)
                continue
            self._count_send(post)
            posts.append(post)
        self._sent.extend(posts)
        return posts

    def take_sends(self) -> list[Post]:
        """Return the posts that went out since the last call, in order: the witness awaits their echoes."""
        sends, self._sends = self._sends, []
        return sends

    def _window_full(self, taking: int) -> bool:
        return self._window is not None and len(self._sent) + taking >= self._window

    def _widen_window(self, settled: Post) -> None:
        if settled.number >= self._catch_up_to or (not self._sent and not self._unsent):
            self._window = None  # caught up: what was lost in flight is through, the server keeps up again

    def _count_send(self, post: Post) -> None:
        post.sends += 1
        self._sends.append(post)
        if post.sends == 2:
            self.repeated += 1
        self.most_copies = max(self.most_copies, post.sends)

    def _settle_seen(self, post: Post) -> None:
        self._bytes -= len(post.data)
        self.seen_only += 1
        self._settled_by_chat.append(post)

    def _give_up(self, post: Post) -> None:
        self._bytes -= len(post.data)
        self.doubtful += 1

    def note_shown(self, post: Post) -> None:
        """Mark a post the chat has shown as seen: the server took it, so it is never sent again.

        Only an echo of a post still awaiting its acknowledgement tells that the server works through ours.
        """
        if post.seen:
            return
        post.seen = True
        if not post.acknowledged:
            self.shown += 1

    def lose_connection(self) -> None:
        """Note that the connection was lost while the oldest post in flight awaited its acknowledgement."""
        if self._sent:
            self._sent[0].timeouts += 1

    def time_out(self) -> None:
        """Note that no acknowledgement came in time for any post in flight."""
        for post in self._sent:
            post.timeouts += 1

    def acknowledge(self) -> Post:
        """Settle the oldest sent post: the server has acknowledged it, so it is never sent again."""
        post = self._sent.popleft()
        post.acknowledged = True
        self._bytes -= len(post.data)
        self.acknowledged += 1
        self._widen_window(post)
        return post

    def rewind(self) -> int:
        """Count every sent post as unsent again, as after a lost connection; return how many will go again.

        A post the chat showed is settled instead, and one sent MAX_SENDS times is given up.
        """
        kept = []
        for post in self._sent:
            if post.seen:
                self._settle_seen(post)
            elif post.timeouts >= MAX_SENDS:
                self._give_up(post)
            else:
                kept.append(post)
        if self._sent:  # posts were lost in flight: a few at a time until the outbox has drained
            self._window = RESEND_WINDOW
            self._catch_up_to = kept[-1].number if kept else 0
        self._sent.clear()
        self._requeue(kept)
        return len(kept)

    def recall_seen(self) -> int:
        """Count no post as shown by the chat unless acknowledged: it proved no witness; return how many go again.

        Those it alone settled go out again; those still here wait for their acknowledgement like any other.
        """
        for post in (*self._sent, *self._unsent):
            post.seen = False
        recalled = list(self._settled_by_chat)
        self._settled_by_chat.clear()
        for post in recalled:
            post.seen = False
            self._bytes += len(post.data)
        self.seen_only -= len(recalled)
        self._requeue(recalled)
        return len(recalled)

    def _requeue(self, posts: list[Post]) -> None:
        """Put posts that went out before back to go again, every post still to go in the order it was added."""
        if posts:
            self._unsent = deque(sorted((*posts, *self._unsent), key=attrgetter("number")))
            self._rewound += len(posts)
