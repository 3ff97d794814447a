"""The sender's sans-IO core: account replies, posts, the outbox and the posting dialogue."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import NamedTuple

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
_INVISIBLE_MARKS = "[\u034f\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]"  # text: compiled on first use
QUOTE_LIMIT = 80


class Account(NamedTuple):
    """An account as the server describes it after login or registration."""

    nickname: str
    token: str


# An account hash in a reply of any shape (JSON, a Python repr): the value after the key, quoted.
_ACCOUNT_HASH = r"""(account_hash['"]?\s*:\s*['"])([^'"\s]+)"""  # text: compiled on first use


def hide_account_hashes(text: str) -> str:
    """Replace every account hash in a reply with the redaction mark, known secret or not."""
    return re.sub(_ACCOUNT_HASH, lambda match: match.group(1) + REDACTED, text)


def find_account_hash(raw: bytes) -> str | None:
    """Return the account hash a reply holds, whatever its shape, or None."""
    match = re.search(_ACCOUNT_HASH, raw.decode(ENCODING, errors="replace"))
    return match.group(2) if match else None


def quote_reply(raw: bytes, secrets: Collection[str] = frozenset()) -> str:
    """Quote a server reply for an error message: escaped, shortened, never raw, with no token in it."""
    if not raw:
        return "nothing (the connection was closed)"
    # Hide secrets before shortening: a token cut in half would slip past the log filter.
    text = hide_account_hashes(redact(decode_line(raw), secrets))
    return f'"{shorten(text, QUOTE_LIMIT)}"'


def parse_account(raw: bytes, secrets: Collection[str] = frozenset()) -> Account | None:
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
        or re.match(_INVISIBLE_MARKS, char)
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
# A post whose acknowledgement timed out, or whose connection was lost while it was due, this many
# times is not sent again: the server takes it and keeps quiet or hangs up, or is too slow for us, and
# each copy may show in everybody's chat.
MAX_SENDS = 3
# After a lost connection, posts go out at most this many at a time until the outbox has drained:
# a connection that drops again soon costs a few copies at most, and acknowledgements come back
# between drops. A server that keeps up gets posts as fast as they come again once it has caught up.
RESEND_WINDOW = 4


@dataclass(eq=False)
class Post:
    """One message on its way: its number in this run, its bytes on the wire, and how often it went out."""

    number: int
    data: bytes
    sends: int = 0
    timeouts: int = 0  # connections given up or lost while this post waited for its acknowledgement
    seen: bool = False  # the chat showed it: it arrived, acknowledged or not


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
        self.added = 0
        self.acknowledged = 0
        self.resent = 0  # sends of posts that had gone out before
        self.repeated = 0  # messages sent more than once
        self.most_copies = 0  # the most times one message went out
        self.doubtful = 0  # messages given up after MAX_SENDS sends: they may have reached the chat, or not
        self.seen_only = 0  # messages the chat showed that the server never acknowledged
        self.shown = 0  # posts the chat has shown so far, acknowledged or not
        self.on_send: Callable[[Post], None] | None = None  # told of each post each time it goes out

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
                continue
            self._count_send(post)
            posts.append(post)
        self._sent.extend(posts)
        return posts

    def _window_full(self, taking: int) -> bool:
        return self._window is not None and len(self._sent) + taking >= self._window

    def _widen_window(self) -> None:
        if not self._sent and not self._unsent:
            self._window = None  # caught up

    def _count_send(self, post: Post) -> None:
        post.sends += 1
        if self.on_send is not None:
            self.on_send(post)
        if post.sends > 1:
            self.resent += 1
        if post.sends == 2:
            self.repeated += 1
        self.most_copies = max(self.most_copies, post.sends)

    def _settle_seen(self, post: Post) -> None:
        self._bytes -= len(post.data)
        self.seen_only += 1

    def _give_up(self, post: Post) -> None:
        self._bytes -= len(post.data)
        self.doubtful += 1

    def note_shown(self, post: Post) -> None:
        """Count a post the chat has just shown: the server took it."""
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
        self._bytes -= len(post.data)
        self.acknowledged += 1
        self._widen_window()
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
        self._sent.clear()
        self._unsent.extendleft(reversed(kept))
        self._rewound += len(kept)
        return len(kept)


class Greeted(NamedTuple):
    """The server greeted us."""

    line: bytes


class Prompted(NamedTuple):
    """The server asked for a nickname."""

    line: bytes


class LoggedIn(NamedTuple):
    """The server knows the token."""

    line: bytes
    account: Account


class Registered(NamedTuple):
    """The server made a new account; its token must be saved before anything else."""

    line: bytes
    account: Account
    malformed: bool = False  # the reply was not in the usual shape, but named the account's token


class Welcomed(NamedTuple):
    """The server takes posts from now on."""

    line: bytes


class Acknowledged(NamedTuple):
    """The server acknowledged a post."""

    line: bytes
    post: Post


class Closed(NamedTuple):
    """The server closed the connection while it owed us nothing."""

    line: bytes = b""


# NamedTuples, not frozen dataclasses: as immutable, and each costs a seventh at every start. They are
# told apart by type (isinstance), never compared.
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
        reading_port_hint: bool = True,
    ) -> None:
        if token is None and nickname is None:
            raise ValueError("a token to log in with or a nickname to register is needed")
        self._outbox = outbox
        self._token = token
        self._nickname = nickname
        self._token_source = token_source or "the token"
        self._secrets = frozenset({token} if token else ())  # what its errors must never quote
        self._hint = READING_PORT_HINT if reading_port_hint else ""  # wrong when we are on the posting port
        self._stage = STAGE_GREETING
        self._to_send: list[bytes] = []
        self._framer = LineFramer()
        self._lines: deque[bytes] = deque()
        self._at_eof = False
        self._failure: ProtocolError | None = None  # raised once the event before it has been handed out

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
            return self._closed() if self._at_eof else None
        line = self._lines.popleft()
        if self._stage == STAGE_POSTING:
            return self._settle(line)
        if not line.endswith(NEWLINE):
            if self._stage == STAGE_REGISTRATION and is_whole_account(line):
                # Cut off before its newline, the new account is whole all the same: keep its token.
                return self._advance(line + NEWLINE)
            raise ConnectionFailed(f"the server closed the connection while we waited for {self._stage}")
        return self._advance(line)

    @property
    def unfinished_bytes(self) -> int:
        """Return how many bytes of a reply line not ended yet are held."""
        return self._framer.pending

    def salvage_account(self) -> Account | None:
        """Return the new account of a registration reply still waiting for its newline, if it is whole."""
        if self._stage != STAGE_REGISTRATION:
            return None
        raw = self._framer.unfinished()
        if is_whole_account(raw):
            return parse_account(raw)
        token = find_account_hash(raw)
        return None if token is None or not raw.rstrip().endswith((b"}", b"'", b'"')) else self._account_of(token)

    def _account_of(self, token: str) -> Account:
        """An account whose reply named only its token: the nickname is the one we asked for."""
        return Account(nickname=self._nickname or "", token=token)

    def data_to_send(self) -> list[bytes]:
        """Return what to write now, in order: dialogue lines, then any unsent posts once we are welcomed."""
        pieces, self._to_send = self._to_send, []
        if self._stage == STAGE_POSTING and self._outbox.has_unsent:
            pieces.extend(post.data for post in self._outbox.take_unsent())
        return pieces

    def _closed(self) -> Closed:
        due = self.waiting_for
        if due is not None:
            raise ConnectionFailed(f"the server closed the connection while we waited for {due}")
        return Closed()

    def _settle(self, line: bytes) -> Acknowledged:
        due = self.waiting_for
        if line == ACK and due is not None:
            return Acknowledged(line, self._outbox.acknowledge())
        if not line.endswith(NEWLINE) and due is not None:
            raise ConnectionFailed(f"the server closed the connection while we waited for {due}")
        if due is None:
            raise ProtocolError(f"the server sent {quote_reply(line, self._secrets)} when no reply was due")
        raise ProtocolError(f"expected {due} from the server, got {quote_reply(line, self._secrets)}")

    def _advance(self, line: bytes) -> Event:  # noqa: C901 (being split in the sender rework)
        stage = self._stage
        if stage == STAGE_GREETING:
            if line != GREETING:
                raise ProtocolError(
                    f"expected the greeting from the server, got {quote_reply(line, self._secrets)}{self._hint}"
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
        if stage == STAGE_REGISTRATION:
            try:
                account = parse_account(line, self._secrets)
            except ProtocolError as error:
                token = find_account_hash(line)
                if token is None:
                    raise
                # The account probably exists and this may be its only copy: keep it, then fail.
                self._failure = error
                self._stage = STAGE_WELCOME
                return Registered(line, self._account_of(token), malformed=True)
        else:
            account = parse_account(line, self._secrets)
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
