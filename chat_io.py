"""What both minechat clients share: protocol text, framing, sanitising, connections, settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

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
HISTORY_TIME_FORMAT = "%d.%m.%y %H:%M"
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


EXIT_CODES: dict[type[ChatError], int] = {
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

# C0, DEL, C1, line/paragraph separators and bidi overrides: all can drive a terminal
# or rearrange what the user sees. "\n" is kept in blocks and escaped in single lines.
_UNSAFE_IN_BLOCK = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
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


def format_stamp(when: datetime) -> str:
    """Return the history prefix for a moment, as [DD.MM.YY HH:MM]."""
    return f"[{when.strftime(HISTORY_TIME_FORMAT)}]"


def format_history_line(text: str, when: datetime) -> str:
    """Return one history line: stamp, space, text, newline."""
    return f"{format_stamp(when)} {text}\n"


def format_status_line(text: str, when: datetime) -> str:
    """Return a history line that marks a connection event, not chat."""
    return format_history_line(f"{STATUS_MARK} {text}", when)


def format_history_block(block: bytes, when: datetime) -> str:
    """Stamp every line of a block of complete received lines; the same as line by line, faster."""
    if not block:
        return ""
    text = block.decode(ENCODING, errors="replace").replace("\r\n", "\n")
    text = _UNSAFE_IN_BLOCK.sub(_escape_char, text)
    prefix = format_stamp(when) + " "
    return prefix + text[:-1].replace("\n", "\n" + prefix) + "\n"


def _utf8_cut(data: bytes | bytearray, limit: int) -> int:
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
            cut = _utf8_cut(line, self._max_line)
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
    return f'"{shorten(decode_line(raw), QUOTE_LIMIT)}"'


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
    """Tell whether text would make an empty post."""
    return not flatten_text(text).strip()


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


def load_token(path: Path) -> str | None:
    """Return the token saved at path, or None if there is none."""
    try:
        text = path.read_text(encoding=ENCODING)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise FileError(f"cannot read the token file {path}: {describe_error(error)}") from error
    return text.strip() or None


def check_token_path(path: Path) -> None:
    """Fail now, before registering, if the token could not be saved at path."""
    folder = path.parent
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise FileError(
            f"cannot save a token in {folder}: {describe_error(error)}; choose another --token_path"
        ) from error


def save_token(path: Path, token: str) -> None:
    """Write the token atomically to a file that only its owner can read."""
    try:
        # mkstemp creates the file with mode 0600, so the token is never readable by others.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding=ENCODING) as file:
                file.write(token + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
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


@asynccontextmanager
async def open_connection(
    host: str, port: int, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connect within timeout, yield the streams, and always close the connection."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=STREAM_LIMIT_BYTES), timeout)
    except asyncio.TimeoutError:
        raise ConnectionFailed(
            f"no answer from {host}:{port} within {timeout:g} s; check the address or raise --connect-timeout"
        ) from None
    except OSError as error:
        raise ConnectionFailed(
            f"cannot connect to {host}:{port}: {describe_error(error)}; check --host and --port"
        ) from error
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


# --- signals ---------------------------------------------------------------


class SignalCatcher:
    """Within its block, SIGINT and SIGTERM are caught and remembered instead of killing us."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

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


def load_environment(environ: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """Return the environment layered over the .env of cwd (the environment wins)."""
    from_file = dotenv_values(cwd / DOTENV_NAME)
    merged = {key: value for key, value in from_file.items() if value is not None}
    merged.update(environ)
    return merged


def make_parser(description: str, port_env: str, port_default: int) -> configargparse.ArgumentParser:
    """Return a parser with the options both clients share."""
    parser = configargparse.ArgumentParser(
        description=description,
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter,
        default_config_files=[],
        epilog=(
            "Every option can also be set in the environment or in a .env file in the current "
            "directory; the command line wins over the environment, the environment over .env."
        ),
    )
    parser.add_argument("--host", env_var="HOST", default=DEFAULT_HOST, help="chat server host")
    parser.add_argument("--port", env_var=port_env, default=port_default, type=port_number, help="chat server port")
    parser.add_argument(
        "--connect-timeout",
        "--connect_timeout",
        env_var="CONNECT_TIMEOUT",
        default=DEFAULT_CONNECT_TIMEOUT,
        type=positive_seconds,
        help="seconds to wait for a connection",
    )
    parser.add_argument("-v", "--verbose", env_var="VERBOSE", action="store_true", help="log at debug level")
    return parser


def parse_arguments(
    parser: configargparse.ArgumentParser,
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> configargparse.Namespace:
    """Parse argv over the environment and .env; usage errors exit through parser.error."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv), env_vars=load_environment(environ, cwd))


def configure_logging(verbose: bool) -> None:
    """Send log records to stderr, one line each, with known secrets hidden."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(SECRETS)


def make_output_safe(stream: object) -> None:
    """Let a console that cannot show every character print escapes instead of failing."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")


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
