"""The sender's sans-IO core: account replies, encoding a post, and the posting dialogue."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, NamedTuple

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

if TYPE_CHECKING:
    from _minechat.outbox import Outbox, Post

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


READING_PORT_HINT = f"; is this the reading port? Posts go to port {DEFAULT_SEND_PORT}"


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

    def _advance(self, line: bytes) -> Event:
        stage = self._stage
        if stage == STAGE_GREETING:
            return self._greeted(line)
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

    def _greeted(self, line: bytes) -> Greeted:
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

    def _expect(self, line: bytes, expected: bytes) -> None:
        if line != expected:
            raise ProtocolError(f"expected {self._stage} from the server, got {quote_reply(line, self._secrets)}")
