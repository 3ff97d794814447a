"""The sender's sans-IO core: account replies, posts, the outbox and the posting dialogue."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from chat_io import (
    ACK,
    DEFAULT_SEND_PORT,
    ENCODING,
    GREETING,
    NEWLINE,
    NICKNAME_PROMPT,
    REDACTED,
    WELCOME,
    ConnectionFailed,
    LineFramer,
    ProtocolError,
    UnknownTokenError,
    decode_line,
    encode_line,
    redact,
    shorten,
)

# Letters that draw nothing (Hangul fillers, the blank Braille pattern); format characters
# (Unicode category Cf: zero-width space, joiners, bidi marks, BOM) draw nothing either.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_FORMAT_CATEGORY = "Cf"
# Marks that show nothing even alone (variation selectors, the grapheme joiner, Mongolian ones);
# a lone accent such as U+0301 does show, on a dotted circle, so it counts as text.
_INVISIBLE_MARKS = re.compile("[\u034f\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
QUOTE_LIMIT = 80
# An account hash in a reply, as JSON or Python would quote it: a malformed reply may still hold an account.
_ACCOUNT_HASH = r"""(["']account_hash["']\s*:\s*["'])([^"'\s]+)(["'])"""
_NICKNAME_FIELD = r"""["']nickname["']\s*:\s*["']([^"']*)["']"""


@dataclass(frozen=True)
class Account:
    """An account as the server describes it after login or registration."""

    nickname: str
    token: str


def quote_reply(raw: bytes, secrets: Collection[str] = ()) -> str:
    """Quote a server reply for an error message: escaped, shortened, never raw, secrets hidden."""
    if not raw:
        return "nothing (the connection was closed)"
    # Hide secrets before shortening: a token cut in half would slip past the log filter. Any account
    # hash is hidden too, known or not: it may be someone's only copy of a token.
    return f'"{shorten(hide_account_hashes(redact(decode_line(raw), secrets)), QUOTE_LIMIT)}"'


def hide_account_hashes(text: str) -> str:
    """Replace the value of every account hash field in text with a placeholder."""
    return re.sub(_ACCOUNT_HASH, rf"\g<1>{REDACTED}\g<3>", text)


def salvage_account(raw: bytes) -> Account | None:
    """Find the account in a reply that is not the JSON it should be; its nickname may be unknown ("")."""
    text = raw.decode(ENCODING, errors="replace")
    found = re.search(_ACCOUNT_HASH, text)
    if found is None:
        return None
    nickname = re.search(_NICKNAME_FIELD, text)
    return Account(nickname=nickname.group(1) if nickname else "", token=found.group(2))


def parse_account(raw: bytes, secrets: Collection[str] = ()) -> Account | None:
    """Parse the login reply: the account, or None for the server's null (an unknown token)."""
    try:
        data = json.loads(raw.decode(ENCODING))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise ProtocolError(f"expected account details from the server, got {quote_reply(raw, secrets)}") from None
    if data is None:
        return None
    fields = data if isinstance(data, dict) else {}
    if not (isinstance(fields.get("nickname"), str) and isinstance(fields.get("account_hash"), str)):
        raise ProtocolError(f"expected account details from the server, got {quote_reply(raw, secrets)}")
    return Account(nickname=data["nickname"], token=data["account_hash"])


def is_blank(text: str) -> bool:
    """Tell whether text would make an empty post: nothing but spaces, breaks and invisible characters."""
    first = text.lstrip()[:1]
    if first.isalnum() and first not in _BLANK_LETTERS:
        return False  # the common case, decided at the first character: this runs twice per post
    return all(
        char.isspace()
        or char in _BLANK_LETTERS
        or unicodedata.category(char) == _FORMAT_CATEGORY
        or _INVISIBLE_MARKS.match(char)
        for char in text
    )


def encode_post(text: str) -> bytes:
    """Encode a message as one post: a single line, then the empty line that ends it."""
    if is_blank(text):
        raise ValueError("an empty message cannot be posted")
    return encode_line(text) + NEWLINE


# The outbox holds at most this many posts or bytes (but always one post): all that a stalled or
# absent server can cost us in memory, however long it stays away. While it is full, stdin waits.
OUTBOX_POSTS = 1024
OUTBOX_BYTES = 16 * 1024 * 1024
READING_PORT_HINT = f"; is this the reading port? Posts go to port {DEFAULT_SEND_PORT}"


# After a lost connection, posts sent before go out again at most this many in flight, so that
# acknowledgements come back between cuts; posts never sent are not held back by it.
RESEND_WINDOW = 4
# A post whose acknowledgement was due this many times when the connection was lost is not sent
# again: a server that takes it and never says so would otherwise post it forever.
MAX_MISSES = 3
# A reply wait doubles after each timeout while an acknowledgement was due, up to this: a few minutes.
REPLY_WAIT_CAP = 180.0


class ReplyWait:
    """How long to wait for a reply line: --reply-timeout, doubled after each timeout while a post's
    acknowledgement was due (up to REPLY_WAIT_CAP), and back to --reply-timeout once acknowledgements
    come on time. A slow server gets the time it needs, instead of every post again and again."""

    def __init__(self, base: float, cap: float = REPLY_WAIT_CAP) -> None:
        self.base = base
        self.cap = max(cap, base)
        self.seconds = base

    def timed_out(self) -> None:
        """An acknowledgement did not come in time: wait longer next time."""
        self.seconds = min(self.seconds * 2, self.cap)

    def answered(self, took: float) -> None:
        """An acknowledgement came, took seconds after it was due; on time, the wait starts over."""
        if took <= self.base:
            self.seconds = self.base


def reading_port_hint(port: int) -> str:
    """Return the hint that port may be the reading port; none for the posting port itself, where it cannot be right."""
    return "" if port == DEFAULT_SEND_PORT else READING_PORT_HINT


@dataclass(eq=False)
class Post:
    """One message on its way: its number in this run, its bytes on the wire, and whether it reached the chat."""

    number: int
    data: bytes
    settled: bool = False  # acknowledged, or seen in the chat: never sent again
    sends: int = 0  # times written to a connection: the most copies the chat may show
    misses: int = 0  # times its acknowledgement was due when the connection was lost

    @property
    def text(self) -> str:
        """Return the post's line as sent, without the line break and the empty line that end it."""
        return self.data[: -2 * len(NEWLINE)].decode(ENCODING)


class SendObserver(Protocol):
    """Who is told of every post sent and settled (the chat's witness)."""

    def sent(self, post: Post) -> None:
        """Post was just written to the server."""

    def settled(self, post: Post) -> None:
        """Post is settled: acknowledged, or seen in the chat."""


class Outbox:
    """Posts not yet known to have reached the chat, oldest first; knows which went out on the current connection.

    A post settles when the server acknowledges it or the chat shows it (see); either way it is never
    sent again. A post seen before its acknowledgement stays among the sent ones until the
    acknowledgement comes (they come in order), or the connection is lost.
    """

    def __init__(
        self, max_posts: int = OUTBOX_POSTS, max_bytes: int = OUTBOX_BYTES, observer: SendObserver | None = None
    ) -> None:
        self.max_posts = max_posts
        self.max_bytes = max_bytes
        self.observer = observer
        self._sent: deque[Post] = deque()  # written on this connection, acknowledgement owed, oldest first
        self._unsent: deque[Post] = deque()  # to write on this connection, oldest first
        self._bytes = 0  # of the posts held, sent or not
        self._unsettled = 0
        self._rewound = 0  # posts at the head of _unsent that went out on an earlier connection
        self.held = False  # while set, nothing is sent: the chat's witness is not watching yet
        self.added = 0
        self.acknowledged = 0
        self.delivered = 0  # acknowledged or seen in the chat
        self.shown = 0  # posts the chat showed before their acknowledgement came, if it ever did
        self.resent = 0  # sends beyond each post's first
        self.repeated = 0  # posts sent more than once
        self.most_sends = 0  # the most times any one post was sent
        self.given_up = 0  # posts sent MAX_MISSES times without an acknowledgement, not sent again
        self._dropped: list[Post] = []  # given up since take_given_up last looked

    def __len__(self) -> int:
        return self._unsettled

    @property
    def _held_posts(self) -> int:
        return len(self._sent) + len(self._unsent)

    @property
    def full(self) -> bool:
        """Tell whether no more posts may be added for now."""
        return self._held_posts >= self.max_posts or self._bytes >= self.max_bytes

    @property
    def roomy(self) -> bool:
        """Tell whether the outbox has drained to half; refilling slot by slot would mean tiny writes."""
        return self._held_posts <= self.max_posts // 2 and self._bytes <= self.max_bytes // 2

    @property
    def oldest_sent(self) -> Post | None:
        """Return the post whose acknowledgement is due next, if any."""
        return self._sent[0] if self._sent else None

    @property
    def has_unsent(self) -> bool:
        """Tell whether some post still has to go out on this connection."""
        return bool(self._unsent) and not self.held

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
        self._unsettled += 1
        return post

    def take_unsent(self) -> list[Post]:
        """Return the posts to send now, in order, and count them as sent; resends only RESEND_WINDOW in flight."""
        if self.held:
            return []
        posts = []
        while self._unsent:
            post = self._unsent[0]
            if post.sends:
                if len(self._sent) >= RESEND_WINDOW:
                    break  # sent before: again only a few at a time, so acknowledgements come back between cuts
                self._rewound -= 1
            self._sent.append(self._unsent.popleft())
            self._count_send(post)
            posts.append(post)
        return posts

    def _count_send(self, post: Post) -> None:
        post.sends += 1
        if post.sends > 1:
            self.resent += 1
            self.repeated += post.sends == 2
            self.most_sends = max(self.most_sends, post.sends)
        if self.observer is not None:
            self.observer.sent(post)

    def acknowledge(self) -> Post:
        """Take the server's acknowledgement of the oldest sent post, which settles it."""
        post = self._sent.popleft()
        self._bytes -= len(post.data)
        self.acknowledged += 1
        self._settle(post)
        return post

    def see(self, post: Post) -> bool:
        """Settle a post the chat showed, acknowledged or not; tell whether that is news."""
        if post.settled:
            return False
        self._settle(post)
        self.shown += 1
        if post in self._unsent:  # shown after all, while the connection that took it was lost
            self._unsent.remove(post)
            self._bytes -= len(post.data)
            self._rewound -= 1
        return True

    def rewind(self) -> int:
        """Count every unsettled sent post as unsent again, as after a lost connection; return how many.

        The post whose acknowledgement was due takes a miss; at MAX_MISSES it is given up, not sent again.
        """
        due = self._sent[0] if self._sent else None
        if due is not None and not due.settled:
            due.misses += 1
        again = []
        for post in self._sent:
            if post.settled:  # seen in the chat: its acknowledgement will never come now
                self._bytes -= len(post.data)
            elif post.misses >= MAX_MISSES:
                self._give_up(post)
            else:
                again.append(post)
        self._sent.clear()
        self._unsent.extendleft(reversed(again))
        self._rewound += len(again)
        return len(again)

    def take_given_up(self) -> list[Post]:
        """Return the posts given up since the last look."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def _give_up(self, post: Post) -> None:
        self._bytes -= len(post.data)
        self._unsettled -= 1
        self.given_up += 1
        self._dropped.append(post)
        if self.observer is not None:
            self.observer.settled(post)  # its echo may still come; then it only stands for itself

    def _settle(self, post: Post) -> None:
        if post.settled:
            return
        post.settled = True
        self._unsettled -= 1
        self.delivered += 1
        if self.observer is not None:
            self.observer.settled(post)


@dataclass(frozen=True)
class Greeted:
    """The server greeted us."""

    line: bytes


@dataclass(frozen=True)
class Prompted:
    """The server asked for a nickname."""

    line: bytes


@dataclass(frozen=True)
class LoggedIn:
    """The server knows the token."""

    line: bytes
    account: Account


@dataclass(frozen=True)
class Registered:
    """The server made a new account; its token must be saved before anything else."""

    line: bytes
    account: Account
    malformed: bool = False  # found in a reply that is not what the protocol says; an error follows


@dataclass(frozen=True)
class Welcomed:
    """The server takes posts from now on."""

    line: bytes


@dataclass(frozen=True)
class Acknowledged:
    """The server acknowledged a post."""

    line: bytes
    post: Post
    fresh: bool = True  # news: the chat had not shown the post before


@dataclass(frozen=True)
class Closed:
    """The server closed the connection while it owed us nothing."""

    line: bytes = b""


Event = Greeted | Prompted | LoggedIn | Registered | Welcomed | Acknowledged | Closed

STAGE_GREETING = "the greeting"
STAGE_LOGIN = "the login reply"
STAGE_PROMPT = "the nickname prompt"
STAGE_REGISTRATION = "the registration reply"
STAGE_WELCOME = "the welcome line"
STAGE_POSTING = "posting"


def is_whole_account(line: bytes) -> bool:
    """Tell whether a line, newline or not, is a complete account reply."""
    try:
        return parse_account(line) is not None
    except ProtocolError:
        return False


class PostingDialogue:
    """One connection's dialogue on the posting port without any I/O, h11-style.

    Fed the server's bytes, it hands out one event per reply line and says what to send; once the
    server welcomes us it sends the outbox's posts and settles one per acknowledgement.
    """

    def __init__(
        self,
        outbox: Outbox,
        token: str | None,
        nickname: str | None = None,
        token_source: str = "",
        secrets: Collection[str] = (),
        port_hint: str = READING_PORT_HINT,
    ) -> None:
        if token is None and nickname is None:
            raise ValueError("a token to log in with or a nickname to register is needed")
        self._outbox = outbox
        self._secrets = secrets  # live: hidden in every reply quoted in an error
        self.port_hint = port_hint  # added when the first reply is not the greeting
        self._token = token
        self._nickname = nickname
        self._token_source = token_source or "the token"
        self._stage = STAGE_GREETING
        self._to_send: list[bytes] = []
        self._framer = LineFramer()
        self._lines: deque[bytes] = deque()
        self._at_eof = False
        # An account reply handed out before its newline came; the line, once whole, is passed over.
        self._early_account: bytes | None = None
        # What a malformed account reply amounts to, raised once the account in it has been handed out.
        self._failure: ProtocolError | None = None

    @property
    def ready(self) -> bool:
        """Tell whether the server takes posts on this connection."""
        return self._stage == STAGE_POSTING

    @property
    def waiting_for(self) -> str | None:
        """Name the reply the server owes us, or None when it owes nothing."""
        if self._stage != STAGE_POSTING:
            return self._stage
        post = self._outbox.oldest_sent
        return None if post is None else f"the acknowledgement of message {post.number}"

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server; b"" means it closed the connection."""
        if not data:
            self._at_eof = True
            unfinished = self._framer.flush()[:-1]
            if unfinished:
                self._lines.append(unfinished)  # without its newline, so it reads as incomplete
            return
        block = self._framer.feed(data)
        if block:
            self._lines.extend(line + NEWLINE for line in block[:-1].split(NEWLINE))

    def next_event(self) -> Event | None:
        """Return what the next reply line means, or None until more data arrives; raise on a bad reply."""
        if self._failure is not None:
            raise self._failure
        if not self._lines:
            if self._at_eof:
                return self._closed()
            return self._take_early_account()
        line = self._lines.popleft()
        if self._early_account is not None:
            early, self._early_account = self._early_account, None
            if line.removesuffix(NEWLINE) == early:
                return self.next_event()  # handed out already
        if self._stage == STAGE_POSTING:
            return self._settle(line)
        if not line.endswith(NEWLINE):
            if self._stage == STAGE_REGISTRATION and (is_whole_account(line) or salvage_account(line)):
                # Cut off before its newline, the new account is whole all the same: keep its token.
                return self._advance(line + NEWLINE)
            raise ConnectionFailed(f"the server closed the connection while we waited for {self._stage}")
        return self._advance(line)

    def data_to_send(self) -> list[bytes]:
        """Return what to write now, in order: dialogue lines, then any unsent posts once we are welcomed."""
        pieces, self._to_send = self._to_send, []
        if self._stage == STAGE_POSTING and self._outbox.has_unsent:
            pieces.extend(post.data for post in self._outbox.take_unsent())
        return pieces

    def _take_early_account(self) -> Event | None:
        """Hand out a whole account reply still waiting for its newline: a timeout or a signal may come first."""
        if self._stage != STAGE_REGISTRATION:
            return None
        unfinished = self._framer.unfinished.strip()
        # A JSON object ends with its brace: a reply cut anywhere else is not whole yet.
        if not (unfinished.startswith(b"{") and unfinished.endswith(b"}")) or not is_whole_account(unfinished):
            return None
        self._early_account = self._framer.unfinished
        return self._advance(self._early_account + NEWLINE)

    def _closed(self) -> Closed:
        due = self.waiting_for
        if due is not None:
            raise ConnectionFailed(f"the server closed the connection while we waited for {due}")
        return Closed()

    def _settle(self, line: bytes) -> Acknowledged:
        due = self.waiting_for
        if line == ACK and due is not None:
            seen = self._outbox.oldest_sent.settled  # type: ignore[union-attr]
            return Acknowledged(line, self._outbox.acknowledge(), fresh=not seen)
        if not line.endswith(NEWLINE) and due is not None:
            raise ConnectionFailed(f"the server closed the connection while we waited for {due}")
        if due is None:
            raise ProtocolError(f"the server sent {quote_reply(line, self._secrets)} when no reply was due")
        raise ProtocolError(f"expected {due} from the server, got {quote_reply(line, self._secrets)}")

    def _advance(self, line: bytes) -> Event:
        stage = self._stage
        if stage == STAGE_GREETING:
            if line != GREETING:
                raise ProtocolError(
                    f"expected the greeting from the server, got {quote_reply(line, self._secrets)}{self.port_hint}"
                )
            if self._token is not None:
                self._to_send.append(encode_line(self._token))
                self._stage = STAGE_LOGIN
            else:
                self._to_send.append(NEWLINE)
                self._stage = STAGE_PROMPT
            return Greeted(line)
        if stage == STAGE_PROMPT:
            self._expect(line, NICKNAME_PROMPT)
            assert self._nickname is not None
            self._to_send.append(encode_line(self._nickname))
            self._stage = STAGE_REGISTRATION
            return Prompted(line)
        if stage == STAGE_WELCOME:
            self._expect(line, WELCOME)
            self._stage = STAGE_POSTING
            return Welcomed(line)
        try:
            account = parse_account(line, self._secrets)
        except ProtocolError:
            salvaged = salvage_account(line) if stage == STAGE_REGISTRATION else None
            if salvaged is None:
                raise
            # The account probably exists, and this may be the only copy of its token: hand it out first.
            self._failure = ProtocolError(f"the registration reply is malformed: {quote_reply(line, self._secrets)}")
            return Registered(line, salvaged, malformed=True)
        if account is None and stage == STAGE_REGISTRATION:
            raise ProtocolError("the server answered null to a registration")
        if account is None:
            # The server goes on to ask for a nickname; anything we sent now would create a junk account.
            raise UnknownTokenError(
                f"the server does not know the token from {self._token_source}; correct it, or remove it "
                "and give --nickname to register a new account"
            )
        self._stage = STAGE_WELCOME
        return Registered(line, account) if stage == STAGE_REGISTRATION else LoggedIn(line, account)

    def _expect(self, line: bytes, expected: bytes) -> None:
        if line != expected:
            raise ProtocolError(f"expected {self._stage} from the server, got {quote_reply(line, self._secrets)}")
