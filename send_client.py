"""Post to the minechat chat: log in with a token, or register a new account and save its token."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import configargparse

from chat_io import (
    ACK,
    DEFAULT_SEND_PORT,
    ENCODING,
    EXIT_INTERRUPTED,
    EXIT_OK,
    GREETING,
    NEWLINE,
    NICKNAME_PROMPT,
    READ_CHUNK_BYTES,
    SECRETS,
    WELCOME,
    Account,
    ChatError,
    ConnectionFailed,
    LineFramer,
    ProtocolError,
    ReplyTimeout,
    SignalCatcher,
    UnknownTokenError,
    cancel_and_wait,
    check_token_path,
    configure_logging,
    describe_error,
    encode_line,
    encode_post,
    exit_code_for,
    flatten_text,
    is_blank,
    load_token,
    make_output_safe,
    make_parser,
    open_connection,
    parse_account,
    parse_arguments,
    positive_seconds,
    quote_reply,
    redact,
    run_until_signal,
    save_token,
)

logger = logging.getLogger("send_client")

DEFAULT_TOKEN_PATH = "token.txt"
DEFAULT_REPLY_TIMEOUT = 10.0
DEFAULT_MESSAGE = "Тестовое сообщение от send_client.py"
STDIN_MARK = "-"
# At most this many posts await their acknowledgements; bounds what a stalled server costs us.
POST_WINDOW = 1024
STDIN_QUEUE_CHUNKS = 4
# The outbox holds at most this many posts or bytes (but always one post): all that a stalled or
# absent server can cost us in memory, however long it stays away.
OUTBOX_POSTS = 1024
OUTBOX_BYTES = 16 * 1024 * 1024
READING_PORT_HINT = f"; is this the reading port? Posts go to port {DEFAULT_SEND_PORT}"


@dataclass(frozen=True)
class SenderSettings:
    """Everything send_client needs, parsed once."""

    host: str
    port: int
    token: str | None
    token_source: str
    nickname: str | None
    token_path: Path
    messages: tuple[str, ...]
    connect_timeout: float
    reply_timeout: float
    verbose: bool


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ask_nickname: Callable[[], str | None] | None = None,
) -> SenderSettings:
    """Build settings from the command line over the environment over .env over defaults."""
    parser = build_parser()
    args = parse_arguments(parser, argv, environ, cwd)
    return resolve_settings(parser, args, ask_nickname)


def build_parser() -> configargparse.ArgumentParser:
    """Return send_client's command-line parser."""
    parser = make_parser(
        "Post to the minechat chat. With no token found, register a new account and save its token.",
        port_env="SEND_PORT",
        port_default=DEFAULT_SEND_PORT,
    )
    parser.add_argument(
        "--token",
        env_var="TOKEN",
        help="account token; on the command line other users of the machine can see it, so prefer .env",
    )
    parser.add_argument(
        "--nickname", env_var="NICKNAME", help="nickname for a new account; refused when a token is found"
    )
    parser.add_argument(
        "--token_path",
        "--token-path",
        dest="token_path",
        env_var="TOKEN_PATH",
        default=DEFAULT_TOKEN_PATH,
        help="token file: read when no token is given, written after registering",
    )
    parser.add_argument(
        "--message",
        env_var="MESSAGE",
        action="append",
        help=f"message to post; repeat for several; '{STDIN_MARK}' posts each line of stdin as it arrives "
        f"(default: {DEFAULT_MESSAGE!r} after a login, nothing after a registration)",
    )
    parser.add_argument(
        "--reply-timeout",
        "--reply_timeout",
        env_var="REPLY_TIMEOUT",
        default=DEFAULT_REPLY_TIMEOUT,
        type=positive_seconds,
        help="seconds to wait for each reply of the server",
    )
    return parser


def resolve_settings(
    parser: configargparse.ArgumentParser,
    args: configargparse.Namespace,
    ask_nickname: Callable[[], str | None] | None,
) -> SenderSettings:
    """Check the parsed options, find the token, and settle what to do."""
    messages = tuple(args.message or ())
    if any(message != STDIN_MARK and is_blank(message) for message in messages):
        parser.error("argument --message: an empty message cannot be posted")
    token_path = Path(args.token_path)
    token, source = (args.token or "").strip() or None, "--token or TOKEN"
    if token is None:
        token, source = load_token(token_path), f"the token file {token_path}"
    if token is not None and any(char.isspace() or not char.isprintable() for char in token):
        parser.error(f"the token from {source} contains spaces or control characters")
    if token is not None and args.nickname is not None:
        # Registering is what --nickname asks for; posting with the old account instead would surprise.
        parser.error(
            f"--nickname (or NICKNAME) registers a new account, but a token was found in {source}; "
            "leave out --nickname to post with that account, or register another one with a --token_path "
            "that holds no token yet" + (" and without --token or TOKEN" if args.token else "")
        )
    nickname = args.nickname
    if token is None and nickname is None and ask_nickname is not None and STDIN_MARK not in messages:
        nickname = ask_nickname()
    if nickname is not None:
        nickname = flatten_text(nickname).strip()
        if not nickname:
            parser.error("argument --nickname: an empty nickname cannot be registered")
    if token is None and nickname is None:
        parser.error(f"no token found (--token, TOKEN or {token_path}); give --nickname to register a new account")
    return SenderSettings(
        host=args.host,
        port=args.port,
        token=token,
        token_source=source,
        nickname=nickname,
        token_path=token_path,
        messages=messages,
        connect_timeout=args.connect_timeout,
        reply_timeout=args.reply_timeout,
        verbose=args.verbose,
    )


# --- the posting dialogue, sans I/O ----------------------------------------------


@dataclass(frozen=True)
class Post:
    """One message on its way: its number in this run and its bytes on the wire."""

    number: int
    data: bytes


class Outbox:
    """Posts not yet acknowledged, oldest first; knows which of them went out on the current connection."""

    def __init__(self, max_posts: int = OUTBOX_POSTS, max_bytes: int = OUTBOX_BYTES) -> None:
        self.max_posts = max_posts
        self.max_bytes = max_bytes
        self._sent: deque[Post] = deque()
        self._unsent: deque[Post] = deque()
        self._bytes = 0
        self._rewound = 0  # posts at the head of _unsent that went out on an earlier connection
        self.added = 0
        self.acknowledged = 0
        self.resent = 0

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

    def take_unsent(self) -> list[Post]:
        """Return the posts to send now, in order, and count them as sent."""
        posts = list(self._unsent)
        self._unsent.clear()
        self._sent.extend(posts)
        self.resent += self._rewound
        self._rewound = 0
        return posts

    def acknowledge(self) -> Post:
        """Settle the oldest sent post: the server has acknowledged it, so it is never sent again."""
        post = self._sent.popleft()
        self._bytes -= len(post.data)
        self.acknowledged += 1
        return post

    def rewind(self) -> int:
        """Count every sent post as unsent again, as after a lost connection; return how many."""
        count = len(self._sent)
        self._unsent.extendleft(reversed(self._sent))
        self._sent.clear()
        self._rewound += count
        return count


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


@dataclass(frozen=True)
class Welcomed:
    """The server takes posts from now on."""

    line: bytes


@dataclass(frozen=True)
class Acknowledged:
    """The server acknowledged a post."""

    line: bytes
    post: Post


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


class PostingDialogue:
    """One connection's dialogue on the posting port without any I/O, h11-style.

    Fed the server's bytes, it hands out one event per reply line and says what to send; once the
    server welcomes us it sends the outbox's posts and settles one per acknowledgement.
    """

    def __init__(self, outbox: Outbox, token: str | None, nickname: str | None = None, token_source: str = "") -> None:
        if token is None and nickname is None:
            raise ValueError("a token to log in with or a nickname to register is needed")
        self._outbox = outbox
        self._token = token
        self._nickname = nickname
        self._token_source = token_source or "the token"
        self._stage = STAGE_GREETING
        self._to_send: list[bytes] = []
        self._framer = LineFramer()
        self._lines: deque[bytes] = deque()
        self._at_eof = False

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
        if not self._lines:
            return self._closed() if self._at_eof else None
        line = self._lines.popleft()
        if self._stage == STAGE_POSTING:
            return self._settle(line)
        if not line.endswith(NEWLINE):
            raise ConnectionFailed(f"the server closed the connection while we waited for {self._stage}")
        return self._advance(line)

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
            raise ProtocolError(f"the server sent {quote_reply(line)} when no reply was due")
        raise ProtocolError(f"expected {due} from the server, got {quote_reply(line)}")

    def _advance(self, line: bytes) -> Event:
        stage = self._stage
        if stage == STAGE_GREETING:
            if line != GREETING:
                raise ProtocolError(
                    f"expected the greeting from the server, got {quote_reply(line)}{READING_PORT_HINT}"
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
        account = parse_account(line)
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
            raise ProtocolError(f"expected {self._stage} from the server, got {quote_reply(line)}")


class Channel:
    """The posting dialogue's line I/O: every read has a timeout, every line is logged redacted."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float, secrets: set[str]
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.secrets = secrets
        self._framer = LineFramer()
        self._lines: deque[bytes] = deque()
        self._at_eof = False

    async def receive(self, stage: str) -> bytes:
        """Read one reply line, naming the stage in any error."""
        line = await self._read_line(stage)
        self._log_received(line)
        self._check_complete(line, stage)
        return line

    async def receive_account(self, stage: str) -> Account | None:
        """Read the login or registration reply; its token is a secret before it is ever logged."""
        line = await self._read_line(stage)
        self._check_complete(line, stage)
        try:
            account = parse_account(line)
        except ProtocolError:
            self._log_received(line)
            raise
        if account is not None:
            self.secrets.add(account.token)
            SECRETS.secrets.add(account.token)
        self._log_received(line)
        return account

    async def _read_line(self, stage: str) -> bytes:
        """Return the next line, reading more only when none is buffered; at EOF, what is left."""
        while not self._lines:
            if self._at_eof:
                return b""
            block = self._framer.feed(await self._read_chunk(stage))
            if block:
                self._lines.extend(line + NEWLINE for line in block[:-1].split(NEWLINE))
            elif self._at_eof:
                # An unfinished last line, without its newline, so it reads as incomplete.
                unfinished = self._framer.flush()[:-1]
                if unfinished:
                    self._lines.append(unfinished)
        return self._lines.popleft()

    async def _read_chunk(self, stage: str) -> bytes:
        """Read what the server has sent, up to a chunk; one timeout covers a whole burst of replies."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(READ_CHUNK_BYTES), self.timeout)
        except asyncio.TimeoutError:
            raise ReplyTimeout(
                f"the server sent nothing for {self.timeout:g} s while we waited for {stage}; "
                "try again later or raise --reply-timeout"
            ) from None
        except OSError as error:
            raise ConnectionFailed(
                f"the connection broke while we waited for {stage}: {describe_error(error)}"
            ) from error
        self._at_eof = not chunk
        return chunk

    def _log_received(self, line: bytes) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("<< %r", redact(line.decode(ENCODING, errors="replace"), self.secrets))

    @staticmethod
    def _check_complete(line: bytes, stage: str) -> None:
        if not line.endswith(b"\n"):
            raise ConnectionFailed(f"the server closed the connection while we waited for {stage}")

    async def expect(self, expected: bytes, stage: str) -> None:
        """Read one reply and insist that it is exactly the expected line."""
        line = await self.receive(stage)
        if line != expected:
            raise ProtocolError(f"expected {stage} from the server, got {quote_reply(line)}")

    def send(self, data: bytes) -> None:
        """Queue bytes for the server."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(">> %r", redact(data.decode(ENCODING), self.secrets))
        self.writer.write(data)

    async def drain(self, stage: str) -> None:
        """Wait until the queued bytes are taken by the network."""
        try:
            await self.writer.drain()
        except OSError as error:
            raise ConnectionFailed(f"the connection broke while sending {stage}: {describe_error(error)}") from error


async def log_in(channel: Channel, token: str, source: str) -> Account:
    """Log in with a token; on an unknown token, stop before the server can register anything."""
    await channel.expect(GREETING, "the greeting")
    channel.send(encode_line(token))
    await channel.drain("the token")
    account = await channel.receive_account("the login reply")
    if account is None:
        # The server goes on to ask for a nickname; anything we sent now would create a junk account.
        raise UnknownTokenError(
            f"the server does not know the token from {source}; correct it, or remove it "
            "and give --nickname to register a new account"
        )
    await channel.expect(WELCOME, "the welcome line")
    return account


async def register(channel: Channel, nickname: str) -> Account:
    """Register a new account with the wanted nickname; return it as the server made it."""
    await channel.expect(GREETING, "the greeting")
    channel.send(b"\n")
    await channel.expect(NICKNAME_PROMPT, "the nickname prompt")
    channel.send(encode_line(nickname))
    await channel.drain("the nickname")
    account = await channel.receive_account("the registration reply")
    if account is None:
        raise ProtocolError("the server answered null to a registration")
    await channel.expect(WELCOME, "the welcome line")
    return account


def choose_reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """Return a read function for stream that returns what is available, up to n bytes."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file, as in tests
        return getattr(stream, "read1", stream.read)
    # The raw descriptor, not the buffered object: a daemon thread blocked inside a buffered
    # read holds its lock, and the interpreter aborts at exit when it finds the lock taken.
    return lambda size: os.read(descriptor, size)


async def read_stdin_lines(stream: BinaryIO) -> AsyncIterator[str]:
    """Yield the lines of a binary stream as they arrive, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=STDIN_QUEUE_CHUNKS)
    read = choose_reader(stream)

    def pump() -> None:
        # A thread, because stdin may be a terminal, a pipe or a file, and only a blocking read
        # works for all of them on every platform. A daemon, so a pending read never holds up exit.
        chunk = b"x"
        while chunk:
            try:
                chunk = read(READ_CHUNK_BYTES)
            except (OSError, ValueError):
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()
            except RuntimeError:  # the loop is gone: we are exiting
                return

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    framer = LineFramer()
    encoding = getattr(sys.stdin, "encoding", None) or ENCODING
    while True:
        chunk = await chunks.get()
        block = framer.feed(chunk) if chunk else framer.flush()
        for line in block.decode(encoding, errors="replace").splitlines():
            yield line
        if not chunk:
            return


async def iterate_messages(messages: Sequence[str], stdin: BinaryIO) -> AsyncIterator[str]:
    """Yield the messages to post in order, '-' standing for the lines of stdin."""
    for message in messages:
        if message != STDIN_MARK:
            yield message
            continue
        async for line in read_stdin_lines(stdin):
            if is_blank(line):
                logger.debug("skipping an empty line of stdin")
                continue
            yield line


async def run_both(first: Coroutine[object, object, object], second: Coroutine[object, object, object]) -> None:
    """Run two coroutines together until both end; if one fails, cancel the other and raise."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            await cancel_and_wait(task)


async def post_messages(channel: Channel, messages: AsyncIterator[str]) -> int:
    """Post every message, sending ahead of the acknowledgements; return how many were acknowledged."""
    pending: deque[int] = deque()
    changed = asyncio.Event()  # a post was sent, or sending ended
    room = asyncio.Event()  # the window has drained to its low mark
    finished_sending = False
    acknowledged = 0

    async def send_all() -> None:
        nonlocal finished_sending
        number = 0
        async for text in messages:
            if len(pending) >= POST_WINDOW:
                # Wait for half the window, not one slot: refilling slot by slot would turn the
                # stream into one tiny write per acknowledgement.
                room.clear()
                await room.wait()
            number += 1
            pending.append(number)
            channel.send(encode_post(text))
            changed.set()
            await channel.drain(f"message {number}")
        finished_sending = True
        changed.set()

    async def receive_acknowledgements() -> None:
        nonlocal acknowledged
        while True:
            while not pending:
                if finished_sending:
                    return
                changed.clear()
                await changed.wait()
            await channel.expect(ACK, f"the acknowledgement of message {pending[0]}")
            pending.popleft()
            acknowledged += 1
            if len(pending) <= POST_WINDOW // 2:
                room.set()

    await run_both(send_all(), receive_acknowledgements())
    return acknowledged


async def send(settings: SenderSettings, stdin: BinaryIO) -> None:
    """Log in or register, then post the messages."""
    secrets = {settings.token} if settings.token else set()
    SECRETS.secrets.update(secrets)
    if settings.token is None:
        check_token_path(settings.token_path)
    async with open_connection(settings.host, settings.port, settings.connect_timeout) as (reader, writer):
        channel = Channel(reader, writer, settings.reply_timeout, secrets)
        if settings.token is not None:
            account = await log_in(channel, settings.token, settings.token_source)
            logger.info("logged in as %s", account.nickname)
            messages = settings.messages or (DEFAULT_MESSAGE,)
        else:
            assert settings.nickname is not None
            account = await register(channel, settings.nickname)
            await asyncio.to_thread(save_token, settings.token_path, account.token)
            logger.info("registered as %s; the token is saved in %s", account.nickname, settings.token_path)
            messages = settings.messages
        if messages:
            count = await post_messages(channel, iterate_messages(messages, stdin))
            logger.info("posted %d message%s as %s", count, "" if count == 1 else "s", account.nickname)


async def run(settings: SenderSettings, stdin: BinaryIO) -> int:
    """Send until done or a signal; return the exit code."""
    with SignalCatcher() as signals:
        if await run_until_signal(send(settings, stdin), signals) is not None:
            logger.info("interrupted")
            return signals.exit_code
    return EXIT_OK


def ask_nickname() -> str | None:
    """Ask the person at the terminal for a nickname."""
    try:
        return input("No token found. Nickname for a new account: ")
    except EOFError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run send_client from the command line; return the exit code."""
    make_output_safe(sys.stderr)
    configure_logging(verbose=False)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    try:
        settings = parse_settings(argv, ask_nickname=ask_nickname if interactive else None)
        configure_logging(settings.verbose)
        return asyncio.run(run(settings, sys.stdin.buffer))
    except ChatError as error:
        logger.error("%s", error)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
