"""What both minechat clients share: the protocol's text and ports, errors and exit codes, escaping,
line framing, connections, the reconnect policy and file locks. It imports nothing of ours."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import random

# What the scripts and _minechat import; the rest is this module's own.
__all__ = [
    "ACK",
    "CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_READ_PORT",
    "DEFAULT_SEND_PORT",
    "ENCODING",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SIGNAL_BASE",
    "EXIT_USAGE",
    "GREETING",
    "MAX_LINE_BYTES",
    "NEWLINE",
    "NICKNAME_PROMPT",
    "READ_CHUNK_BYTES",
    "REDACTED",
    "STATUS_MARK",
    "WELCOME",
    "AlreadyRunning",
    "ChatError",
    "ConnectionFailed",
    "DelayFactory",
    "FileError",
    "LineFramer",
    "ProtocolError",
    "ReplyTimeout",
    "UnknownTokenError",
    "WrongPort",
    "backoff",
    "connect_socket",
    "decode_line",
    "describe_connect_failure",
    "describe_error",
    "enable_keepalive",
    "encode_line",
    "exit_code_for",
    "flatten_text",
    "format_address",
    "is_retryable",
    "lock_file",
    "open_connection",
    "plural",
    "redact",
    "sanitize_block",
    "sanitize_text",
    "shorten",
    "utf8_cut",
    "within",
]

DEFAULT_HOST = "minechat.dvmn.org"
DEFAULT_READ_PORT = 5000
DEFAULT_SEND_PORT = 5050
DEFAULT_CONNECT_TIMEOUT = 10.0

# Every reply of the posting port, byte for byte as the public server sends it.
GREETING = b"Hello %username%! Enter your personal hash or leave it empty to create new account.\n"
NICKNAME_PROMPT = b"Enter preferred nickname below:\n"
WELCOME = b"Welcome to chat! Post your message below. End it with an empty line.\n"
ACK = b"Message send. Write more, end message with an empty line.\n"

ENCODING = "utf-8"
NEWLINE = b"\n"
STATUS_MARK = "***"

# One read takes at most this much; a line longer than MAX_LINE_BYTES is cut into pieces.
READ_CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 * 1024
STREAM_LIMIT_BYTES = 256 * 1024

CLOSE_TIMEOUT = 2.0
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


# C0, DEL, C1, line/paragraph separators, bidi overrides, isolates and marks (ALM, LRM, RLM):
# all can drive a terminal or rearrange what the user sees. "\n" is kept in blocks and escaped in single lines.
# Kept as text, not compiled at import: re compiles each once, on first use, and caches it.
_UNSAFE_IN_BLOCK = "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_UNSAFE_IN_LINE = "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_LINE_BREAKS = "\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def sanitize_text(text: str) -> str:
    """Escape every character of one line that could drive a terminal."""
    return re.sub(_UNSAFE_IN_LINE, _escape_char, text)


def sanitize_block(text: str) -> str:
    """Escape every character of a block of lines that could drive a terminal; line breaks stay."""
    return re.sub(_UNSAFE_IN_BLOCK, _escape_char, text)


def flatten_text(text: str) -> str:
    """Turn every kind of line break into a space so text stays on one protocol line."""
    return re.sub(_LINE_BREAKS, " ", text)


def shorten(text: str, limit: int = 80) -> str:
    """Escape and cut text for quoting in an error message."""
    safe = sanitize_text(text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def plural(count: int, noun: str) -> str:
    """Return '1 message' or '2 messages'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


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

    def unfinished(self) -> bytes:
        """Return the unfinished last line held so far, keeping it."""
        return bytes(self._buffer)

    def flush(self) -> bytes:
        """Return the unfinished last line, ended with a newline, and forget it."""
        if not self._buffer:
            return b""
        block = bytes(self._buffer) + NEWLINE
        self._buffer.clear()
        return block


REDACTED = "<token>"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in text with a placeholder."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def lock_file(descriptor: int, wait: bool = True) -> bool:
    """Take an exclusive lock on an open file, which the OS drops when it is closed or we die; tell if we have it.

    Without wait, return False at once if another holds it. Windows locks are mandatory: a byte far
    past the data is locked, so others can still read the file; a wait there takes no lock at all.
    """
    try:
        if sys.platform == "win32":
            if wait:
                return True  # no waiting lock on Windows; the check for a token still guards against most races
            import msvcrt

            os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        if wait:
            raise
        return False
    return True


_WINDOWS_LOCK_OFFSET = 1 << 30


def backoff(
    initial: float = BACKOFF_INITIAL,
    factor: float = BACKOFF_FACTOR,
    cap: float = BACKOFF_CAP,
    jitter: float = BACKOFF_JITTER,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield retry delays: quick first, growing by factor up to cap, each shortened by random jitter."""
    if rng is None:
        import random  # here: only a run that reconnects needs it, and --help should start fast

        rng = random.Random()
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
    # Before Python 3.11 asyncio's TimeoutError is not the built-in one, which is an OSError without errno.
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(error, socket.gaierror) and error.strerror:
        return error.strerror  # its errno is getaddrinfo's, which os.strerror does not know
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


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


# RFC 8305's delay before the next address of a host is tried while the ones before still might answer.
HAPPY_EYEBALLS_DELAY = 0.25
AddressInfo = tuple[int, int, int, str, tuple]  # what getaddrinfo yields per address


async def resolve(host: str, port: int) -> list[AddressInfo]:
    """Return the addresses of host, in the resolver's order; a lookup that hangs never holds up a stop.

    The lookup runs in a daemon thread of its own, not in asyncio's executor, whose threads are
    waited for at the end of asyncio.run and at exit: a resolver that never answers would keep us.
    """
    with suppress(socket.gaierror):  # an address already: no lookup, no thread
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    loop = asyncio.get_running_loop()
    found: asyncio.Future[list[AddressInfo]] = loop.create_future()

    def settle(result: list[AddressInfo] | None, error: BaseException | None) -> None:
        if found.done():
            return  # given up on (a stop, a timeout)
        if error is None:
            found.set_result(result)  # type: ignore[arg-type]
        else:
            found.set_exception(error)

    def look_up() -> None:
        try:
            result, error = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), None
        except Exception as caught:  # handed to whoever waits, who raises it
            result, error = None, caught
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=look_up, name="getaddrinfo", daemon=True).start()
    return await found


def interleave(infos: list[AddressInfo]) -> list[AddressInfo]:
    """Order addresses by family in turns, the first family first (RFC 8305), so one broken family costs one delay."""
    families: dict[int, list[AddressInfo]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    turns = itertools.zip_longest(*families.values())
    return [info for turn in turns for info in turn if info is not None]


async def connect_socket(host: str, port: int) -> socket.socket:
    """Connect to host's addresses as asyncio's Happy Eyeballs does (RFC 8305): the next one after a delay or a failure.

    Return the first connected socket; the other attempts are cancelled. Raise OSError if none connects.
    """
    from asyncio.staggered import staggered_race  # what create_connection uses; here, as only a connect needs it

    infos = interleave(await resolve(host, port))
    if len(infos) == 1:
        return await _connect_to(infos[0])  # nothing to race: as quick as a plain connect
    connected: list[socket.socket] = []

    async def attempt(info: AddressInfo) -> socket.socket:
        sock = await _connect_to(info)
        connected.append(sock)
        return sock

    winner: socket.socket | None = None
    try:
        winner, _, errors = await staggered_race(
            [functools.partial(attempt, info) for info in infos], HAPPY_EYEBALLS_DELAY
        )
    finally:
        # staggered_race drops a winner when it is cancelled as it wins, and a loser that connected in
        # the same moment: whatever connected and is not returned is closed here.
        for other in connected:
            if other is not winner:
                other.close()
    if winner is None:
        raise _one_error([error for error in errors if error is not None] or [OSError(f"no address for {host}")])
    return winner


async def _connect_to(info: AddressInfo) -> socket.socket:
    family, kind, protocol, _, address = info
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _one_error(errors: list[BaseException]) -> BaseException:
    """Return the one error to report of all the addresses' failures, as asyncio does."""
    if len({str(error) for error in errors}) == 1:
        return errors[0]
    return OSError(f"Multiple exceptions: {', '.join(str(error) for error in errors)}")


async def _open_streams(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await connect_socket(host, port)
    try:
        return await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT_BYTES)
    except BaseException:
        sock.close()
        raise


T = TypeVar("T")

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline  # counts cancels: one from outside is never taken for its own
else:

    def is_being_cancelled(task: asyncio.Task[object]) -> bool:
        """Tell whether a cancel is on its way into task (3.10 has no Task.cancelling(); these are its own fields)."""
        waiter = task._fut_waiter  # type: ignore[attr-defined]
        return bool(task._must_cancel or (waiter is not None and waiter.cancelled()))  # type: ignore[attr-defined]

    @asynccontextmanager
    async def _deadline(seconds: float) -> AsyncIterator[None]:
        """Cancel the block after seconds and raise asyncio.TimeoutError, as asyncio.timeout does from 3.11."""
        task = asyncio.current_task()
        assert task is not None  # only ever used inside a task
        expired = False

        def expire() -> None:
            nonlocal expired
            if is_being_cancelled(task):  # a cancel from outside came first: it goes on as a cancel
                return
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise asyncio.TimeoutError from None
            raise
        finally:
            timer.cancel()


async def within(seconds: float, work: Awaitable[T]) -> T:
    """Await work, or raise asyncio.TimeoutError after seconds.

    Unlike asyncio.wait_for before Python 3.12, a cancel that lands as work completes is never lost:
    a connection made in that moment is closed and the cancel goes on.
    """
    async with _deadline(seconds):
        return await work


@asynccontextmanager
async def open_connection(
    host: str, port: int, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connect within timeout, yield the streams, and always close the connection."""
    try:
        reader, writer = await within(timeout, _open_streams(host, port))
    except (OSError, asyncio.TimeoutError) as error:
        raise describe_connect_failure(host, port, timeout, error) from error
    try:
        enable_keepalive(writer.get_extra_info("socket"))
        yield reader, writer
    finally:
        writer.close()
        try:
            await within(CLOSE_TIMEOUT, writer.wait_closed())
        except (OSError, asyncio.TimeoutError):
            # The peer is gone or stuck; the transport is closed on our side all the same.
            writer.transport.abort()


def format_address(host: str, port: int) -> str:
    """Return host:port, with an IPv6 address in brackets so the port stands apart."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


DelayFactory = Callable[[], Iterator[float]]
