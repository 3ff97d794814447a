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
from typing import BinaryIO, TextIO

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
    full_path,
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
    text_value,
)

logger = logging.getLogger("send_client")

DEFAULT_TOKEN_PATH = "token.txt"
DEFAULT_REPLY_TIMEOUT = 10.0
DEFAULT_MESSAGE = "Тестовое сообщение от send_client.py"
STDIN_MARK = "-"
# At most this many posts await their acknowledgements; bounds what a stalled server costs us.
POST_WINDOW = 1024
STDIN_QUEUE_CHUNKS = 4
NICKNAME_QUESTION = "No token found. Nickname for a new account: "


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
    args.token_path = full_path(args.token_path, cwd)
    return resolve_settings(parser, args, ask_nickname)


def build_parser() -> configargparse.ArgumentParser:
    """Return send_client's command-line parser."""
    parser = make_parser(
        "Post to the minechat chat. With no token found, register a new account and save its token.",
        port_env="SEND_PORT",
        port_default=DEFAULT_SEND_PORT,
        port_help="port that takes logins and posts",
        verbose_help="log the whole dialogue ('>>' sent, '<<' received), token hidden",
    )
    parser.add_argument(
        "--token",
        env_var="TOKEN",
        type=text_value,
        help="account token; on the command line other users of the machine can see it, so prefer .env",
    )
    parser.add_argument(
        "--nickname", env_var="NICKNAME", type=text_value, help="nickname for a new account, when no token is found"
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
        type=text_value,
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
    nickname = args.nickname
    if token is None and nickname is None and ask_nickname is not None and STDIN_MARK not in messages:
        nickname = ask_nickname()
    if nickname is not None:
        nickname = flatten_text(nickname).strip()
        if is_blank(nickname):
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
            if settings.nickname:
                logger.info("a token was found, so --nickname is not used")
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


def ask_nickname(stdin: TextIO | None = None, out: TextIO | None = None) -> str | None:
    """Ask the person at the terminal for a nickname until one is given; None at the end of input."""
    stdin = stdin or sys.stdin
    out = out or sys.stderr  # the prompt is not output: stdout may be a file
    encoding = getattr(stdin, "encoding", None) or ENCODING
    while True:
        try:
            out.write(NICKNAME_QUESTION)
            out.flush()
            raw = stdin.buffer.readline()
        except KeyboardInterrupt:
            out.write("\n")  # Ctrl-C: end the prompt's line, so the shell's prompt starts on its own
            out.flush()
            raise
        if not raw:  # Ctrl-D
            out.write("\n")
            return None
        try:
            nickname = raw.decode(encoding)
        except UnicodeDecodeError:
            out.write(f"That is not {encoding} text; type the nickname again.\n")
            continue
        if not is_blank(nickname):
            return nickname


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
