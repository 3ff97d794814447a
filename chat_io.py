"""What both minechat clients share: protocol text, framing, sanitising, connections, settings."""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import json
import logging
import os
import random
import re
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, NoReturn, Protocol, TextIO

import configargparse
from dotenv import dotenv_values

logger = logging.getLogger(__name__)

DEFAULT_HOST = "minechat.dvmn.org"
DEFAULT_READ_PORT = 5000
DEFAULT_SEND_PORT = 5050
DEFAULT_CONNECT_TIMEOUT = 10.0
DOTENV_NAME = ".env"

# Every reply of the posting port, byte for byte as the public server sends it.
GREETING = b"Hello %username%! Enter your personal hash or leave it empty to create new account.\n"
NICKNAME_PROMPT = b"Enter preferred nickname below:\n"
WELCOME = b"Welcome to chat! Post your message below. End it with an empty line.\n"
ACK = b"Message send. Write more, end message with an empty line.\n"

ENCODING = "utf-8"
NEWLINE = b"\n"
# The seed's stamp, [DD.MM.YY HH:MM]; --time-format changes it.
DEFAULT_TIME_FORMAT = "[%d.%m.%y %H:%M]"
# The one strftime field finer than a second: a format that holds it is formatted for every chunk.
SUBSECOND_FIELD = "f"
STATUS_MARK = "***"

# One read takes at most this much; a line longer than MAX_LINE_BYTES is cut into pieces.
READ_CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 * 1024
STREAM_LIMIT_BYTES = 256 * 1024

CLOSE_TIMEOUT = 2.0
RECANCEL_SECONDS = 0.5
# A dead peer is noticed after about IDLE + INTERVAL * COUNT seconds of silence.
KEEPALIVE_IDLE_SECONDS = 60
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 5

BACKOFF_INITIAL = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 60.0
BACKOFF_JITTER = 0.25

# Exit codes, one table for both scripts; README lists them.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_PROTOCOL = 4
EXIT_UNKNOWN_TOKEN = 5
EXIT_FILE = 6
EXIT_LOCKED = 7
EXIT_SIGNAL_BASE = 128
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + signal.SIGINT

MIN_PORT = 1
MAX_PORT = 65535


class ChatError(Exception):
    """Base of every error the clients report to the user."""


class ConnectionFailed(ChatError):
    """The server could not be reached, went silent or hung up."""


class ProtocolError(ChatError):
    """The server said something the protocol does not allow here."""


class UnknownTokenError(ChatError):
    """The server does not know the token."""


class ReplyTimeout(ConnectionFailed):
    """The server said nothing for too long."""


class FileError(ChatError):
    """A local file (history or token) could not be read or written."""


class AlreadyRunning(ChatError):
    """Another client already writes the same file."""


class WrongPort(ChatError):
    """The server on this port speaks the other half of the protocol."""


EXIT_CODES: dict[type[ChatError], int] = {
    AlreadyRunning: EXIT_LOCKED,
    WrongPort: EXIT_USAGE,
    UnknownTokenError: EXIT_UNKNOWN_TOKEN,
    ProtocolError: EXIT_PROTOCOL,
    ConnectionFailed: EXIT_CONNECTION,
    FileError: EXIT_FILE,
}


def exit_code_for(error: ChatError) -> int:
    """Return the documented exit code for a client error."""
    for error_type, code in EXIT_CODES.items():
        if isinstance(error, error_type):
            return code
    return EXIT_FAILURE


# --- text ------------------------------------------------------------------

# C0, DEL, C1, line/paragraph separators, bidi overrides, isolates and marks (ALM, LRM, RLM):
# all can drive a terminal or rearrange what the user sees. "\n" is kept in blocks and escaped in single lines.
_UNSAFE_IN_BLOCK = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Letters that draw nothing (Hangul fillers, the blank Braille pattern); format characters
# (Unicode category Cf: zero-width space, joiners, bidi marks, BOM) draw nothing either.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_FORMAT_CATEGORY = "Cf"
# Marks that show nothing even alone (variation selectors, the grapheme joiner, Mongolian ones);
# a lone accent such as U+0301 does show, on a dotted circle, so it counts as text.
_INVISIBLE_MARKS = re.compile("[\u034f\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_LINE_BREAKS = re.compile("\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def sanitize_text(text: str) -> str:
    """Escape every character of one line that could drive a terminal."""
    return _UNSAFE_IN_LINE.sub(_escape_char, text)


def flatten_text(text: str) -> str:
    """Turn every kind of line break into a space so text stays on one protocol line."""
    return _LINE_BREAKS.sub(" ", text)


def shorten(text: str, limit: int = 80) -> str:
    """Escape and cut text for quoting in an error message."""
    safe = sanitize_text(text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def decode_line(raw: bytes) -> str:
    """Decode one received line (with or without its ending) into safe text."""
    if raw.endswith(NEWLINE):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return sanitize_text(raw.decode(ENCODING, errors="replace"))


def encode_line(text: str) -> bytes:
    """Encode text as exactly one protocol line that cannot drive anybody's terminal."""
    return sanitize_text(flatten_text(text).replace("\t", " ")).encode(ENCODING) + NEWLINE


def format_stamp(when: datetime, time_format: str = DEFAULT_TIME_FORMAT) -> str:
    """Return the history prefix for a moment: [DD.MM.YY HH:MM], or as time_format says."""
    return when.strftime(time_format)


def format_history_line(text: str, when: datetime) -> str:
    """Return one history line: stamp, space, text, newline."""
    return f"{format_stamp(when)} {text}\n"


def format_status_line(text: str, when: datetime) -> str:
    """Return a history line that marks a connection event, not chat."""
    return format_history_line(f"{STATUS_MARK} {text}", when)


def split_strftime(pattern: str) -> list[tuple[str, bool]]:
    """Split a strftime pattern into (literal text, False) and (field letter, True); raise ValueError on a lone %."""
    parts: list[tuple[str, bool]] = []
    literal = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char != "%":
            literal.append(char)
            position += 1
            continue
        if position + 1 == len(pattern):
            raise ValueError("it ends with a lone %; a literal % is written %%")
        field = pattern[position + 1]
        position += 2
        if field == "%":
            literal.append("%")
            continue
        if literal:
            parts.append(("".join(literal), False))
            literal = []
        parts.append((field, True))
    if literal:
        parts.append(("".join(literal), False))
    return parts


def has_subsecond_field(time_format: str) -> bool:
    """Tell whether a strftime format shows fractions of a second (%f), so it cannot be kept for a second."""
    try:
        return any(is_field and text == SUBSECOND_FIELD for text, is_field in split_strftime(time_format))
    except ValueError:
        return False


class Moment(NamedTuple):
    """One moment as the history writes it."""

    stamp: str  # the stamp of --time-format, for text lines and stdout
    iso: str  # ISO 8601 local time with seconds and UTC offset, for JSON records
    path: str  # the history file that holds what arrives at this moment


class StampClock:
    """Formats the current moment for the history: once a second, since strftime is slow next to a chunk.

    A time format with %f is formatted on every call, so all lines of one received chunk share a stamp.
    """

    def __init__(
        self,
        time_format: str = DEFAULT_TIME_FORMAT,
        expand_path: Callable[[datetime], str] = lambda when: "",
        now: Callable[[], float] = time.time,
    ) -> None:
        self._time_format = time_format
        self._expand_path = expand_path
        self._now = now
        self._every_call = has_subsecond_field(time_format)
        self._cached: tuple[int, Moment] | None = None  # one attribute, replaced whole: safe to read from a thread

    def read(self) -> Moment:
        """Return the current moment, formatted at most once a second."""
        now = self._now()
        if self._every_call:
            return self.at(now)
        second = int(now // 1)
        cached = self._cached
        if cached is None or cached[0] != second:
            # Formatted from the whole second, so every call within it gets the same text.
            cached = (second, self.at(second))
            self._cached = cached
        return cached[1]

    def fresh(self) -> Moment:
        """Return the current moment, formatted now (for rare notes, from any thread)."""
        return self.at(self._now())

    def at(self, timestamp: float) -> Moment:
        """Format a moment given in seconds since the epoch, in local time."""
        when = datetime.fromtimestamp(timestamp, timezone.utc).astimezone()  # right offset in a DST fold too
        return Moment(when.strftime(self._time_format), when.isoformat(timespec="seconds"), self._expand_path(when))


def stamp_following_lines(block: bytes, prefix: str) -> str:
    """Decode and escape a block of complete lines, with prefix before every line but the first."""
    text = block.decode(ENCODING, errors="replace").replace("\r\n", "\n")
    text = _UNSAFE_IN_BLOCK.sub(_escape_char, text)
    return text[:-1].replace("\n", "\n" + prefix) + "\n"


def format_history_block(block: bytes, when: datetime) -> str:
    """Stamp every line of a block of complete received lines; the same as line by line, faster."""
    if not block:
        return ""
    prefix = format_stamp(when) + " "
    return prefix + stamp_following_lines(block, prefix)


def utf8_cut(data: bytes | bytearray, limit: int) -> int:
    """Return a cut position not after limit that does not split a UTF-8 character."""
    cut = limit
    # Back up over at most three continuation bytes (0b10xxxxxx).
    for _ in range(3):
        if cut <= 0 or data[cut] & 0xC0 != 0x80:
            break
        cut -= 1
    return cut if cut > 0 else limit


class LineFramer:
    """Split a byte stream into complete lines, cutting overlong lines into bounded pieces."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max_line = max_line
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Return how many bytes of an unfinished line are held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> bytes:
        """Take received bytes; return the complete lines among them, each ending in a newline."""
        first_end = data.find(NEWLINE)
        first_length = len(self._buffer) + (len(data) if first_end < 0 else first_end)
        self._buffer += data
        if first_length > self._max_line or len(data) > self._max_line:
            return self._feed_overlong()
        end = self._buffer.rfind(NEWLINE)
        if end < 0:
            return b""
        block = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return block

    def _feed_overlong(self) -> bytes:
        """Slow path: some line is longer than the limit."""
        *complete, rest = bytes(self._buffer).split(NEWLINE)
        pieces = [piece for line in complete for piece in self._cut(line)]
        tail = self._cut(rest)
        self._buffer = bytearray(tail.pop())
        pieces.extend(tail)
        return b"".join(piece + NEWLINE for piece in pieces)

    def _cut(self, line: bytes) -> list[bytes]:
        """Cut a line into pieces of at most max_line bytes, cutting between characters."""
        pieces = []
        while len(line) > self._max_line:
            cut = utf8_cut(line, self._max_line)
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
        return pieces

    def flush(self) -> bytes:
        """Return the unfinished last line, ended with a newline, and forget it."""
        if not self._buffer:
            return b""
        block = bytes(self._buffer) + NEWLINE
        self._buffer.clear()
        return block


class LineStamper:
    """Turn received bytes into history text: one stamp per line, however long the line.

    A line longer than max_piece is passed on in pieces as it arrives, with no line break
    between them, so memory stays bounded and nobody can pad a message into a forged line.
    """

    def __init__(self, max_piece: int = MAX_LINE_BYTES) -> None:
        self._max_piece = max_piece
        self._buffer = bytearray()
        self._continued = False  # the text given out so far ends inside a line
        self.completed = False  # at least one whole line has been given out

    @property
    def pending(self) -> int:
        """Return how many bytes of an unfinished line are held."""
        return len(self._buffer)

    def feed(self, data: bytes, stamp: str) -> str:
        """Take received bytes; return the history text for what they complete."""
        if self._buffer:
            self._buffer += data
            end = self._buffer.rfind(NEWLINE)
            block = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
        else:
            end = data.rfind(NEWLINE)
            block = data[: end + 1]
            self._buffer = bytearray(data[end + 1 :])
        text = ""
        if block:
            text = self._format_block(block, stamp)
            self._continued = False
            self.completed = True
        if len(self._buffer) > self._max_piece:
            text += self._give_pieces(stamp)
        return text

    @property
    def continued(self) -> bool:
        """Tell whether the text given out so far ends inside a line."""
        return self._continued

    def flush(self, stamp: str) -> str:
        """Return the unfinished last line, ended with a newline, and forget it."""
        if not self._buffer and not self._continued:
            return ""
        text = self._format_end(bytes(self._buffer), stamp)
        self._buffer.clear()
        self._continued = False
        return text

    def _start(self, stamp: str) -> str:
        return "" if self._continued else stamp + " "

    def _format_block(self, block: bytes, stamp: str) -> str:
        """Format complete lines (the first may end a line begun earlier)."""
        return self._start(stamp) + stamp_following_lines(block, stamp + " ")

    def _format_piece(self, raw: bytes, stamp: str) -> str:
        """Format part of a line that goes on (it may begin the line)."""
        return self._start(stamp) + _escape_piece(raw)

    def _format_end(self, raw: bytes, stamp: str) -> str:
        """Format the last part of a line and end it."""
        return self._format_piece(raw, stamp) + "\n"

    def _give_pieces(self, stamp: str) -> str:
        """Give out all but the last max_piece bytes of the unfinished line, cut between characters."""
        pieces = []
        while len(self._buffer) > self._max_piece:
            # The last byte always stays held, so a CR waiting for its LF is never given out alone.
            cut = utf8_cut(self._buffer, self._max_piece)
            pieces.append(self._format_piece(bytes(self._buffer[:cut]), stamp))
            del self._buffer[:cut]
            self._continued = True
        return "".join(pieces)


# JSON escapes what is below U+0020; these (DEL, C1, bidi controls and marks, line and paragraph
# separators) it leaves raw, and they too could drive a terminal that shows the file or split its lines.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_encode_json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]
NICK_SEPARATOR = ": "
RECORD_END = '"}\n'


def _escape_json_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def make_json_safe(text: str) -> str:
    """Turn the characters JSON leaves raw but a terminal or a line splitter would act on into \\u escapes."""
    return _UNSAFE_IN_JSON.sub(_escape_json_char, text) if _UNSAFE_IN_JSON.search(text) else text


def format_json_record(when: str, text: str, nick: str | None = None, **fields: object) -> str:
    """Return one JSON Lines record: time, nick, text and any further fields, on one line."""
    record = {"time": when, "nick": nick, "text": text, **fields}
    return make_json_safe(json.dumps(record, ensure_ascii=False)) + "\n"


def _json_record(head: str, line: str) -> str:
    """Return the record of one whole chat line; head holds its time."""
    nick, separator, text = line.partition(NICK_SEPARATOR)
    if separator:
        return f'{head}{_encode_json_string(nick)}, "text": {_encode_json_string(text)}}}\n'
    return f'{head}null, "text": {_encode_json_string(line)}}}\n'


def _json_head(time: str) -> str:
    return f'{{"time": "{time}", "nick": '


class JsonLineStamper(LineStamper):
    """Turn received bytes into JSON Lines: {"time", "nick", "text"}, one record per line, however long.

    The stamp given to feed and flush is the record's time (ISO 8601). A line longer than max_piece is
    streamed: its record is opened with the first piece (whose first ": " splits off the nick), its text
    continued piece by piece, and closed at the newline; memory stays bounded and the record stays whole.
    """

    def _format_block(self, block: bytes, stamp: str) -> str:
        lines = block.decode(ENCODING, errors="replace").replace("\r\n", "\n")[:-1].split("\n")
        records = []
        if self._continued:
            records.append(_encode_json_string(lines[0])[1:] + "}\n")
            del lines[0]
        head = _json_head(stamp)
        records.extend([_json_record(head, line) for line in lines])
        return make_json_safe("".join(records))

    def _format_piece(self, raw: bytes, stamp: str) -> str:
        text = raw.decode(ENCODING, errors="replace")
        if self._continued:
            return make_json_safe(_encode_json_string(text)[1:-1])
        return make_json_safe(_json_record(_json_head(stamp), text)[: -len(RECORD_END)])

    def _format_end(self, raw: bytes, stamp: str) -> str:
        return self._format_piece(raw, stamp) + RECORD_END


def _escape_piece(raw: bytes) -> str:
    """Decode and escape part of one line."""
    return sanitize_text(raw.decode(ENCODING, errors="replace"))


# --- posting protocol -----------------------------------------------------

REDACTED = "<token>"
QUOTE_LIMIT = 80


@dataclass(frozen=True)
class Account:
    """An account as the server describes it after login or registration."""

    nickname: str
    token: str


def quote_reply(raw: bytes) -> str:
    """Quote a server reply for an error message: escaped, shortened, never raw."""
    if not raw:
        return "nothing (the connection was closed)"
    # Hide known secrets before shortening: a token cut in half would slip past the log filter.
    return f'"{shorten(redact(decode_line(raw), SECRETS.secrets), QUOTE_LIMIT)}"'


def parse_account(raw: bytes) -> Account | None:
    """Parse the login reply: the account, or None for the server's null (an unknown token)."""
    try:
        data = json.loads(raw.decode(ENCODING))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise ProtocolError(f"expected account details from the server, got {quote_reply(raw)}") from None
    if data is None:
        return None
    fields = data if isinstance(data, dict) else {}
    if not (isinstance(fields.get("nickname"), str) and isinstance(fields.get("account_hash"), str)):
        raise ProtocolError(f"expected account details from the server, got {quote_reply(raw)}")
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


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in text with a placeholder."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class SecretFilter(logging.Filter):
    """Keeps known secrets out of every log record it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact(message, self.secrets)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


SECRETS = SecretFilter()


# Windows Notepad saves UTF-8 with a byte-order mark; it is not part of the token.
TOKEN_FILE_ENCODING = "utf-8-sig"
# A token is a UUID; a file far longer than that is not a token file (or is /dev/zero).
TOKEN_FILE_LIMIT = 4096
# What the pre-check writes: longer than any token the server hands out (a UUID is 36 characters).
TOKEN_PROBE = b"0" * 64 + NEWLINE


def load_token(path: Path) -> str | None:
    """Return the token saved at path, or None if there is none."""
    try:
        # A FIFO would wait for a writer forever and /dev/zero never ends: only a regular file is read.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FileError(f"cannot read the token file {path}: it is not a regular file; choose another --token_path")
        with open(path, "rb") as file:
            raw = file.read(TOKEN_FILE_LIMIT + 1)
        if len(raw) > TOKEN_FILE_LIMIT:
            raise FileError(f"cannot read the token file {path}: it is far too long for a token; check --token_path")
        text = raw.decode(TOKEN_FILE_ENCODING)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise FileError(f"cannot read the token file {path}: {describe_error(error)}") from error
    return text.strip() or None


def resolve_token_path(path: Path) -> Path:
    """Return the file a token path really names, so a symlink is written through, not replaced."""
    return Path(os.path.realpath(path))


def write_durably(descriptor: int, data: bytes) -> None:
    """Write all of data to an open file and wait until it is on the disk."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]
    os.fsync(descriptor)


def check_token_path(path: Path) -> None:
    """Fail now, before registering, if the token could not be saved at path."""
    folder = resolve_token_path(path).parent
    try:
        # Real bytes, synced: an empty file fits on a full disk, a token does not.
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            write_durably(descriptor, TOKEN_PROBE)
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as error:
        raise FileError(
            f"cannot save a token in {folder}: {describe_error(error)}; choose another --token_path"
        ) from error


def save_token(path: Path, token: str) -> None:
    """Write the token atomically to a file that only its owner can read (through a symlink, to its target)."""
    target = resolve_token_path(path)
    try:
        # mkstemp creates the file with mode 0600, so the token is never readable by others.
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            try:
                write_durably(descriptor, (token + "\n").encode(ENCODING))
            finally:
                os.close(descriptor)
            if load_token(target) is not None:
                # Another registration saved its token here meanwhile: replacing it would lose that account.
                raise FileError(f"cannot save the token to {path}: it holds another token now (saved meanwhile)")
            os.replace(temporary, target)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise FileError(f"cannot save the token to {path}: {describe_error(error)}") from error


# --- reconnect policy ------------------------------------------------------


def backoff(
    initial: float = BACKOFF_INITIAL,
    factor: float = BACKOFF_FACTOR,
    cap: float = BACKOFF_CAP,
    jitter: float = BACKOFF_JITTER,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield retry delays: quick first, growing by factor up to cap, each shortened by random jitter."""
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay * (1 - jitter * rng.random())
        delay = min(delay * factor, cap)


def is_retryable(error: BaseException) -> bool:
    """Tell whether a connection error is worth another try (network trouble, not local misuse)."""
    return isinstance(error, (ConnectionFailed, OSError, EOFError, asyncio.TimeoutError))


def describe_error(error: BaseException) -> str:
    """Return a short human description of a network error."""
    if isinstance(error, ChatError):
        return str(error)
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, socket.gaierror) and error.strerror:
        return error.strerror  # its errno is getaddrinfo's, which os.strerror does not know
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# --- connections -----------------------------------------------------------


def enable_keepalive(sock: socket.socket | None) -> None:
    """Ask the OS to probe an idle connection so a dead network is noticed within minutes."""
    if sock is None:
        return
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "SIO_KEEPALIVE_VALS"):  # Windows
            sock.ioctl(  # type: ignore[attr-defined]
                socket.SIO_KEEPALIVE_VALS,  # type: ignore[attr-defined]
                (1, KEEPALIVE_IDLE_SECONDS * 1000, KEEPALIVE_INTERVAL_SECONDS * 1000),
            )
            return
        idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
        if idle_option is not None:  # TCP_KEEPALIVE is macOS's name for it
            sock.setsockopt(socket.IPPROTO_TCP, idle_option, KEEPALIVE_IDLE_SECONDS)
        if hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        if hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def describe_connect_failure(host: str, port: int, timeout: float, error: BaseException) -> ConnectionFailed:
    """Return the error to report when a connection could not be made."""
    address = format_address(host, port)
    if isinstance(error, asyncio.TimeoutError):
        return ConnectionFailed(
            f"no answer from {address} within {timeout:g} s; check the address or raise --connect-timeout"
        )
    return ConnectionFailed(f"cannot connect to {address}: {describe_error(error)}; check --host and --port")


@asynccontextmanager
async def open_connection(
    host: str, port: int, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connect within timeout, yield the streams, and always close the connection."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=STREAM_LIMIT_BYTES), timeout)
    except (OSError, asyncio.TimeoutError) as error:
        raise describe_connect_failure(host, port, timeout, error) from error
    try:
        enable_keepalive(writer.get_extra_info("socket"))
        yield reader, writer
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            # The peer is gone or stuck; the transport is closed on our side all the same.
            writer.transport.abort()


class ChunkSink(Protocol):
    """Where a receiving connection delivers what it gets, as it gets it."""

    def connected(self, connection: ReceivingConnection) -> None:
        """The connection is made; nothing has been received yet."""

    def received(self, data: bytes) -> None:
        """Some bytes arrived; must not raise (call connection.fail to end it)."""


class ReceivingConnection(asyncio.BufferedProtocol):
    """A connection we only read from: every chunk goes to the sink in order, and the end comes after all of them.

    Unlike StreamReader, which raises a reset before handing over what it has buffered, this
    delivers every byte that arrived before the connection ended, however it ended. It reads
    into one buffer of its own, READ_CHUNK_BYTES at a time, which bounds what each chunk costs.
    """

    def __init__(self, sink: ChunkSink) -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = memoryview(bytearray(READ_CHUNK_BYTES))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sink.connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._sink.received(bytes(self._buffer[:nbytes]))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(exc)

    def _settle(self, error: BaseException | None) -> None:
        if self._ended.done():
            return
        if error is None:
            self._ended.set_result(None)
        else:
            self._ended.set_exception(error)

    def pause(self, paused: bool) -> None:
        """Stop or resume reading from the socket, so what we cannot store yet waits in the kernel."""
        if self._transport is None or self._transport.is_closing():
            return
        if paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def fail(self, error: BaseException) -> None:
        """End the connection with error, which wait_ended then raises."""
        self._settle(error)
        if self._transport is not None:
            self._transport.close()

    async def wait_ended(self) -> None:
        """Return when the server closed the connection; raise what else ended it."""
        await asyncio.shield(self._ended)

    async def close(self) -> None:
        """Close the connection and wait briefly for it to go; abort it if it does not."""
        if self._transport is None:
            return
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), CLOSE_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ChatError):
            self._transport.abort()
        finally:
            if self._ended.done() and not self._ended.cancelled():
                self._ended.exception()  # retrieved, so asyncio does not log it


@asynccontextmanager
async def open_receiver(
    host: str, port: int, sink: ChunkSink, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> AsyncIterator[ReceivingConnection]:
    """Connect within timeout for reading only; yield the connection, and always close it."""
    loop = asyncio.get_running_loop()
    try:
        transport, connection = await asyncio.wait_for(
            loop.create_connection(lambda: ReceivingConnection(sink), host, port), timeout
        )
    except (OSError, asyncio.TimeoutError) as error:
        raise describe_connect_failure(host, port, timeout, error) from error
    try:
        enable_keepalive(transport.get_extra_info("socket"))
        yield connection
    finally:
        await connection.close()


# --- signals ---------------------------------------------------------------


class SignalCatcher:
    """Within its block, SIGINT, SIGTERM and SIGHUP are caught and remembered instead of killing us."""

    # SIGHUP: the terminal was closed. Windows has none of it.
    SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
    )

    def __init__(self) -> None:
        self.received: int | None = None
        self._arrived = asyncio.Event()
        self._installed: list[int] = []

    def __enter__(self) -> SignalCatcher:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                # Windows: Ctrl-C still arrives as KeyboardInterrupt, which main() maps.
                continue
            self._installed.append(signum)
        return self

    def _on_signal(self, signum: int) -> None:
        if self.received is None:
            self.received = signum
        self._arrived.set()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)

    async def wait(self) -> None:
        """Return once a signal has arrived."""
        await self._arrived.wait()

    @property
    def exit_code(self) -> int:
        """Return the conventional exit code for the signal that stopped us."""
        return EXIT_SIGNAL_BASE + (self.received or signal.SIGINT)


def ignore_stop_signals() -> None:
    """Let SIGINT, SIGTERM and SIGHUP do nothing from now on."""
    for signum in SignalCatcher.SIGNALS:
        with suppress(OSError, ValueError):  # ValueError: not the main thread
            signal.signal(signum, signal.SIG_IGN)


async def cancel_and_wait(task: asyncio.Future[object]) -> None:
    """Cancel a task and wait until it has really ended."""
    while not task.done():
        # Before Python 3.12, asyncio.wait_for can swallow a cancellation that lands as its
        # inner call completes, so one cancel() is not always enough.
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)


async def run_until_signal(work: Coroutine[object, object, object], signals: SignalCatcher) -> int | None:
    """Run work to its end, or cancel it when a signal arrives; return the signal number, or None."""
    task = asyncio.ensure_future(work)
    signalled = asyncio.ensure_future(signals.wait())
    try:
        await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        await cancel_and_wait(task)
    if signals.received is not None:
        return signals.received
    task.result()  # raises what the work raised
    return None


# --- settings --------------------------------------------------------------

ENVIRONMENT_SOURCE = "the environment"
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_SURROGATES = re.compile("[\ud800-\udfff]")
# What a lone surrogate stands for: an undecodable byte of argv, the environment or a name.
_SURROGATE_ESCAPE_BASE = 0xDC00
_SURROGATE_ESCAPE_BYTES = range(0xDC80, 0xDD00)


@dataclass(frozen=True)
class Setting:
    """The value of a variable and where it was found, for error messages."""

    value: str
    source: str


class ChatArgumentParser(configargparse.ArgumentParser):
    """configargparse's parser, naming each option's variable in --help without its generic sentence."""

    def format_help(self) -> str:
        for action in self._actions:
            name = getattr(action, "env_var", None)
            note = f"[env var: {name}]"
            if name and action.help and note not in action.help:
                action.help += " " + note
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        """Report a usage error in one line, as every error is, and exit with EXIT_USAGE."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class HelpFormatter(configargparse.ArgumentDefaultsHelpFormatter):
    """Show a default only when there is one, and only if the help text does not give it already."""

    def _get_help_string(self, action: configargparse.Action) -> str | None:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def is_undecodable(text: str) -> bool:
    """Tell whether text holds bytes that were not valid UTF-8 (lone surrogates, as Python decodes them)."""
    return _SURROGATES.search(text) is not None


def _show_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _SURROGATE_ESCAPE_BYTES:
        return f"\\x{code - _SURROGATE_ESCAPE_BASE:02x}"
    return f"\\u{code:04x}"


def show_value(text: str) -> str:
    """Escape a value, undecodable bytes included, and cut it for an error message."""
    return shorten(_SURROGATES.sub(_show_surrogate, text))


def format_address(host: str, port: int) -> str:
    """Return host:port, with an IPv6 address in brackets so the port stands apart."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def text_value(value: str) -> str:
    """Parse free text for argparse (a message, a nickname, a token): it must be valid UTF-8."""
    if is_undecodable(value):
        raise configargparse.ArgumentTypeError("not valid UTF-8 text")
    return value


def is_ip_address(text: str, version: int | None = None) -> bool:
    """Tell whether text is an IP address (of the given version, if one is given)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def host_name(value: str) -> str:
    """Parse a host for argparse: a name IDNA accepts or an IP address; [IPv6] loses its brackets."""
    if is_undecodable(value):
        raise configargparse.ArgumentTypeError("not valid UTF-8 text")
    host = value.strip()
    if "[" in host or "]" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        if not is_ip_address(inner, version=6):
            raise configargparse.ArgumentTypeError(f"'{show_value(value)}': only an IPv6 address goes in brackets")
        return inner
    if is_ip_address(host):
        return host
    try:
        encoded = host.encode("idna")  # what the resolver will do; it fails on an empty or overlong label
    except UnicodeError:
        encoded = b""
    if not encoded:
        raise configargparse.ArgumentTypeError(
            f"'{show_value(value)}' is not a host name (every dot-separated part must be 1 to 63 characters)"
        )
    return host


def port_number(value: str) -> int:
    """Parse a TCP port for argparse."""
    try:
        port = int(value)
    except ValueError:
        raise configargparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not MIN_PORT <= port <= MAX_PORT:
        raise configargparse.ArgumentTypeError(f"{port} is outside {MIN_PORT}..{MAX_PORT}")
    return port


def positive_seconds(value: str) -> float:
    """Parse a positive number of seconds for argparse."""
    try:
        seconds = float(value)
    except ValueError:
        raise configargparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise configargparse.ArgumentTypeError(f"{value} must be more than 0")
    return seconds


def full_path(value: str, cwd: Path | None = None) -> Path:
    """Return the path a relative value names from the current directory, so messages show it whole."""
    return (Path.cwd() if cwd is None else cwd) / value


def read_dotenv(path: Path) -> dict[str, str]:
    """Return the variables set in a .env file; a line that is not UTF-8 is skipped with a warning."""
    if not path.is_file():  # none, or a folder such as a virtual environment named .env
        return {}
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FileError(f"cannot read {path}: {describe_error(error)}; fix its permissions or remove it") from error
    lines = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode("utf-8-sig" if number == 1 else ENCODING))
        except UnicodeDecodeError:
            logger.warning("skipping line %d of %s: it is not UTF-8 text; save the file as UTF-8", number, path)
            lines.append("\n")  # keeps the numbers of the lines after it, which python-dotenv reports
    return {key: value for key, value in dotenv_values(stream=io.StringIO("".join(lines))).items() if value}


def load_environment(environ: Mapping[str, str], cwd: Path) -> dict[str, Setting]:
    """Return the environment layered over the .env of cwd (the environment wins); an empty value is unset."""
    dotenv_path = cwd / DOTENV_NAME
    merged = {key: Setting(value, str(dotenv_path)) for key, value in read_dotenv(dotenv_path).items()}
    merged.update((key, Setting(value, ENVIRONMENT_SOURCE)) for key, value in environ.items() if value)
    return merged


def make_parser(
    description: str, port_env: str, port_default: int, port_help: str, verbose_help: str
) -> configargparse.ArgumentParser:
    """Return a parser with the options both clients share."""
    parser = ChatArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
        default_config_files=[],
        add_env_var_help=False,
        allow_abbrev=False,
        epilog=(
            "Every option can also be set in the environment or in a .env file in the current "
            "directory; the command line wins over the environment, the environment over .env. "
            "An empty value counts as unset."
        ),
    )
    parser.add_argument("--host", env_var="HOST", default=DEFAULT_HOST, type=host_name, help="chat server host")
    parser.add_argument("--port", env_var=port_env, default=port_default, type=port_number, help=port_help)
    parser.add_argument(
        "--connect-timeout",
        "--connect_timeout",
        env_var="CONNECT_TIMEOUT",
        default=DEFAULT_CONNECT_TIMEOUT,
        type=positive_seconds,
        help="seconds to wait for a connection",
    )
    parser.add_argument("-v", "--verbose", env_var="VERBOSE", action="store_true", help=verbose_help)
    return parser


def check_variable(action: configargparse.Action, setting: Setting) -> str | None:
    """Return what is wrong with a variable's value for this option, or None if nothing is."""
    if action.nargs == 0:  # a flag
        if setting.value.lower() not in TRUE_WORDS + FALSE_WORDS:
            return f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}"
        return None
    if action.type is not None:
        try:
            action.type(setting.value)
        except (configargparse.ArgumentTypeError, TypeError, ValueError) as error:
            return str(error)
    if action.choices is not None and setting.value not in action.choices:
        return f"expected one of {', '.join(action.choices)}"
    return None


def environment_values(
    parser: configargparse.ArgumentParser, argv: Sequence[str], settings: Mapping[str, Setting]
) -> dict[str, str]:
    """Check the variables that the command line leaves in force; return them as configargparse takes them."""
    values = {}
    for action in parser._actions:
        name = getattr(action, "env_var", None)
        setting = settings.get(name) if name else None
        if setting is None or configargparse.already_on_command_line(argv, action.option_strings, parser.prefix_chars):
            continue
        problem = check_variable(action, setting)
        if problem is not None:
            # Free text is not shown: it may be the token.
            shown = "" if action.type is text_value else f"={show_value(setting.value)}"
            parser.error(f"{name}{shown} (from {setting.source}): {problem}")
        value = setting.value
        if isinstance(action, argparse._AppendAction):
            # One variable is one value, verbatim: configargparse would split "[a, b]" into a list.
            value = json.dumps([value])
        values[name] = value
    return values


def parse_arguments(
    parser: configargparse.ArgumentParser,
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> configargparse.Namespace:
    """Parse argv over the environment and .env; usage errors exit through parser.error."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_environment(environ, cwd)
    except FileError as error:
        parser.error(str(error))
    return parser.parse_args(arguments, env_vars=environment_values(parser, arguments, settings))


def configure_logging(verbose: bool, background: bool = False) -> None:
    """Send log records to stderr, one line each, with known secrets hidden.

    With background, records are written by a thread, so a stderr nobody reads (a paused
    terminal) never holds up the caller; what does not fit in a bounded queue is skipped.
    """
    if background:
        handler: logging.Handler = BackgroundHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(SECRETS)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def flush_logging() -> None:
    """Give every log handler a moment to write out what it holds."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def make_output_safe(stream: object) -> None:
    """Let a console that cannot show every character print escapes instead of failing."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")


# --- terminal output -------------------------------------------------------

OUTPUT_LIMIT_CHARS = 256 * 1024
OUTPUT_CLOSE_TIMEOUT = 0.5
OUTPUT_RETRY_SECONDS = 0.01


class RawTextOutput:
    """Writes text straight to a stream's raw file, so a write blocked on a full pipe holds no lock.

    A blocked write inside a buffered stream holds the buffer's lock, and the interpreter aborts
    at exit when it finds that lock taken; the raw file has no lock to take.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._encoding = getattr(stream, "encoding", None) or ENCODING
        self._raw = getattr(getattr(stream, "buffer", None), "raw", None)

    def write(self, text: str) -> None:
        """Write all of text, blocking as long as the reader makes us."""
        if self._raw is None:  # a stand-in stream without a file, as under test capture
            self._stream.write(text)
            self._stream.flush()
            return
        data = memoryview(text.encode(self._encoding, errors="backslashreplace"))
        while data:
            written = self._raw.write(data)
            if written is None:  # someone made the file non-blocking: wait, as a blocking write would
                threading.Event().wait(OUTPUT_RETRY_SECONDS)
                continue
            data = data[written:]

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the file."""


class BackgroundWriter:
    """Writes text from a daemon thread, so the caller never waits for a slow or stuck output.

    At most limit characters wait; what does not fit is skipped and counted, and skip_note(count)
    takes its place once there is room again. After the first failed write, nothing more is tried.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        skip_note: Callable[[int], str],
        limit: int = OUTPUT_LIMIT_CHARS,
        name: str = "output",
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._write = write
        self._skip_note = skip_note
        self._limit = limit
        self._on_failure = on_failure
        self._chunks: deque[str] = deque()
        self._size = 0  # queued and being written
        self._skipped = 0  # line ends skipped, not yet reported
        self._skipping_line = False  # skipping up to the end of a line whose start was skipped
        self._at_line_start = True
        self._closing = False
        self._stuck = False
        self._changed = threading.Condition()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, text: str) -> bool:
        """Queue text; return False if it was skipped (no room) or cannot be written any more."""
        with self._changed:
            if self.failure is not None or self._closing:
                return False
            if self._skipping_line:
                # The start of this line was skipped: its rest must not pass for a line of its own.
                end = text.find("\n")
                if end < 0:
                    return False
                self._skipping_line = False
                self._skipped += 1
                text = text[end + 1 :]
                if not text:
                    return False
            if self._size and self._size + len(text) > self._limit:
                self._skipped += text.count("\n")
                self._skipping_line = not text.endswith("\n")
                return False
            self._queue_skip_note()
            self._chunks.append(text)
            self._size += len(text)
            self._at_line_start = text.endswith("\n")
            self._changed.notify_all()
            return True

    def _queue_skip_note(self) -> None:
        """Mark the place of a gap (with the lock held)."""
        if self._skipped:
            note = ("" if self._at_line_start else "\n") + self._skip_note(self._skipped)
            self._skipped = 0
            self._at_line_start = True
            self._chunks.append(note)
            self._size += len(note)

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._chunks:
                    self._queue_skip_note()  # caught up: say now what was skipped, not at the next line
                while not self._chunks and not self._closing:
                    self._changed.wait()
                if not self._chunks:
                    return
                text = "".join(self._chunks)
                self._chunks.clear()
            try:
                self._write(text)
            except Exception as error:  # whatever the output raises, the client goes on without it
                with self._changed:
                    self.failure = error
                    self._chunks.clear()
                    self._size = 0
                    self._changed.notify_all()
                if self._on_failure is not None:
                    self._on_failure(error)
                return
            with self._changed:
                self._size -= len(text)
                self._changed.notify_all()

    def wait_written(self, timeout: float = OUTPUT_CLOSE_TIMEOUT) -> bool:
        """Wait until everything queued is written, at most timeout seconds; tell if it was.

        Once a wait has run out, later ones return at once: the output is stuck, and each
        further wait would only delay the exit.
        """
        with self._changed:
            if self._stuck:
                return False
            written = self._changed.wait_for(lambda: self._size == 0 or self.failure is not None, timeout)
            self._stuck = not written
            return written

    def close(self, timeout: float = OUTPUT_CLOSE_TIMEOUT) -> None:
        """Write out what is queued, waiting at most timeout, then stop the thread (or leave it stuck)."""
        self.wait_written(timeout)
        with self._changed:
            self._closing = True
            self._changed.notify_all()


class BackgroundHandler(logging.Handler):
    """A log handler that writes to a stream through a BackgroundWriter."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._writer = BackgroundWriter(
            RawTextOutput(stream).write, lambda count: f"{STATUS_MARK} {count} log lines skipped\n", name="log"
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.put(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self._writer.wait_written()

    def close(self) -> None:
        self._writer.close()
        super().close()


# --- service manager -------------------------------------------------------
# systemd's notify protocol (sd_notify(3)): datagrams of NAME=value lines sent to the AF_UNIX
# socket that NOTIFY_SOCKET names. Without that variable, or without AF_UNIX (Windows),
# nothing is sent and nothing changes.

NOTIFY_SOCKET_VARIABLE = "NOTIFY_SOCKET"
WATCHDOG_USEC_VARIABLE = "WATCHDOG_USEC"
WATCHDOG_PID_VARIABLE = "WATCHDOG_PID"
MICROSECONDS_PER_SECOND = 1_000_000
# systemd asks for a ping at least every half period; a third leaves room for a busy moment.
WATCHDOG_PINGS_PER_PERIOD = 3
STATUS_LIMIT = 200


def parse_notify_address(value: str | None) -> str | None:
    """Return the AF_UNIX address that NOTIFY_SOCKET names ("@name" is abstract), or None for none we can use."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    logger.debug("NOTIFY_SOCKET %r is neither a path nor an abstract name; not notifying", value)
    return None


def parse_watchdog_period(usec: str | None, pid: str | None, own_pid: int) -> float | None:
    """Return the watchdog period in seconds that the service manager asks of this process, or None."""
    try:
        period = int(usec or 0) / MICROSECONDS_PER_SECOND
        # WATCHDOG_PID, when set, says which process the watchdog is meant for: not a child of it.
        meant_for_us = not pid or int(pid) == own_pid
    except ValueError:
        return None
    return period if period > 0 and meant_for_us else None


class ServiceNotifier:
    """Tells a service manager (systemd, Type=notify) that we are ready, how we are, and that we are alive.

    Within its block the socket is open; on leaving, it says STOPPING=1 and closes it. Sending never
    blocks and never raises: a message that cannot go is dropped and logged at debug level.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.address = parse_notify_address(environ.get(NOTIFY_SOCKET_VARIABLE))
        self.watchdog_period = parse_watchdog_period(
            environ.get(WATCHDOG_USEC_VARIABLE), environ.get(WATCHDOG_PID_VARIABLE), os.getpid() if pid is None else pid
        )
        self._socket: socket.socket | None = None

    def __enter__(self) -> ServiceNotifier:
        family = getattr(socket, "AF_UNIX", None)  # Windows has none: then there is no systemd either
        if self.address is not None and family is not None:
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
            except OSError as error:
                logger.debug("cannot open a socket to the service manager: %s", describe_error(error))
            else:
                self._socket = sock
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.notify("STOPPING=1")
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()

    def notify(self, *assignments: str) -> None:
        """Send NAME=value lines in one datagram, if a service manager listens."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(assignments).encode(ENCODING), self.address)
        except OSError as error:  # gone, or its queue is full: the next message may fare better
            logger.debug("cannot notify the service manager: %s", describe_error(error))

    def ready(self) -> None:
        """Say that start-up is over and we are working."""
        self.notify("READY=1")

    def status(self, text: str) -> None:
        """Show one line of text as our status (systemctl status)."""
        self.notify(f"STATUS={shorten(text, STATUS_LIMIT)}")  # escaped, so it cannot add another line

    @asynccontextmanager
    async def watchdog(self) -> AsyncIterator[None]:
        """Within the block, ping the watchdog often enough while the event loop runs, if one is asked for."""
        if self._socket is None or self.watchdog_period is None:
            yield
            return
        pinger = asyncio.ensure_future(self._ping_forever(self.watchdog_period / WATCHDOG_PINGS_PER_PERIOD))
        try:
            yield
        finally:
            await cancel_and_wait(pinger)
            if not pinger.cancelled() and pinger.exception() is not None:
                logger.debug("the watchdog pinger failed: %r", pinger.exception())

    async def _ping_forever(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
