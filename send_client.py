"""Post to the minechat chat: log in with a token, or register a new account and save its token."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import configargparse

from _minechat.dialogue import (
    MAX_MISSES,
    STAGE_GREETING,
    Account,
    Acknowledged,
    Closed,
    Event,
    LoggedIn,
    Outbox,
    Post,
    PostingDialogue,
    Registered,
    ReplyWait,
    Welcomed,
    is_blank,
    reading_port_hint,
)
from _minechat.output import plural
from _minechat.settings import full_path, make_parser, parse_arguments, port_number, positive_seconds, text_value
from _minechat.shutdown import SignalCatcher, cancel_and_wait, run_cli, run_until_signal
from _minechat.witness import Witness
from chat_io import (
    DEFAULT_READ_PORT,
    DEFAULT_SEND_PORT,
    ENCODING,
    EXIT_OK,
    EXIT_USAGE,
    READ_CHUNK_BYTES,
    ChatError,
    ConnectionFailed,
    DelayFactory,
    FileError,
    LineFramer,
    ReceivingConnection,
    ReplyTimeout,
    TokenFileTaken,
    backoff,
    check_token_path,
    describe_error,
    flatten_text,
    format_address,
    is_retryable,
    load_token,
    open_connection,
    open_receiver,
    redact,
    sanitize_text,
    save_token,
    shorten,
)

logger = logging.getLogger("send_client")

DEFAULT_TOKEN_PATH = "token.txt"
# The chat the sender watches for its own posts: the reading port, the reader's READ_PORT.
DEFAULT_WATCH_PORT = DEFAULT_READ_PORT
DEFAULT_REPLY_TIMEOUT = 10.0
DEFAULT_MESSAGE = "Тестовое сообщение от send_client.py"
STDIN_MARK = "-"
# A stdin line longer than this (far beyond what a command line takes) is posted in pieces this long.
MAX_STDIN_LINE_BYTES = 1024 * 1024
STDIN_QUEUE_CHUNKS = 4
# With fixed messages, a connection lost after login is tried again this many times without progress.
RESUME_TRIES = 5
STDIN_HINT = (
    "Type a message and press Enter to post it; end with Ctrl-Z, then Enter."
    if sys.platform == "win32"
    else "Type a message and press Enter to post it; end with Ctrl-D."
)
# The slowest uplink a reply deadline allows for, on top of --reply-timeout (a 1 MiB post: 32 s more).
UPLOAD_FLOOR_BYTES_PER_SECOND = 32 * 1024
NICKNAME_QUESTION = "No token found. Nickname for a new account: "
# How much of a post its confirmation on a terminal shows.
CONFIRM_CHARS = 60


@dataclass(frozen=True)
class SenderSettings:
    """Everything send_client needs, parsed once."""

    host: str
    port: int
    read_port: int
    token: str | None
    token_source: str
    nickname: str | None
    token_path: Path
    messages: tuple[str, ...]
    connect_timeout: float
    reply_timeout: float
    verbose: bool
    check: bool = False  # log in, say who we are, post nothing

    @property
    def streaming(self) -> bool:
        """Tell whether stdin is relayed, which makes the sender never give up on the network."""
        return STDIN_MARK in self.messages


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
    given = list(sys.argv[1:] if argv is None else argv)
    if args.check and configargparse.already_on_command_line(given, ["--message"], parser.prefix_chars):
        parser.error("--check posts nothing; leave out --message")
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
        "--read-port",
        "--read_port",
        dest="read_port",
        env_var="READ_PORT",
        default=DEFAULT_WATCH_PORT,
        type=port_number,
        help="port that streams the chat, watched for our own posts so that none is sent twice",
    )
    parser.add_argument(
        "--token",
        env_var="TOKEN",
        type=text_value,
        help="account token; on the command line other users of the machine can see it, so prefer .env",
    )
    parser.add_argument(
        "--nickname",
        env_var="NICKNAME",
        type=text_value,
        help="nickname for a new account; refused when a token is found",
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
        help="seconds to wait for each whole reply line of the server",
    )
    parser.add_argument(
        "--check",
        env_var="CHECK",
        action="store_true",
        help="log in, print the nickname and exit; nothing is posted (exit code 5: the token is unknown)",
    )
    return parser


def resolve_settings(
    parser: configargparse.ArgumentParser,
    args: configargparse.Namespace,
    ask_nickname: Callable[[], str | None] | None,
) -> SenderSettings:
    """Check the parsed options, find the token, and settle what to do."""
    messages = () if args.check else tuple(args.message or ())  # a MESSAGE in .env is for other runs
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
    if args.check and token is None:
        parser.error(f"--check logs in with a token, but no token was found (--token, TOKEN or {token_path})")
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
        read_port=args.read_port,
        token=token,
        token_source=source,
        nickname=nickname,
        token_path=token_path,
        messages=messages,
        connect_timeout=args.connect_timeout,
        reply_timeout=args.reply_timeout,
        verbose=args.verbose,
        check=args.check,
    )


def choose_reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """Return a read function for stream that returns what is available, up to n bytes."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file, as in tests
        return getattr(stream, "read1", stream.read)
    # The raw descriptor, not the buffered object: a daemon thread blocked inside a buffered
    # read holds its lock, and the interpreter aborts at exit when it finds the lock taken.
    return lambda size: os.read(descriptor, size)


def split_stdin_block(block: bytes, encoding: str) -> list[str]:
    """Split complete stdin lines into messages: only "\\n" ends one; other separators stay inside."""
    lines = block.decode(encoding, errors="replace")[:-1].split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


async def read_stdin_lines(stream: BinaryIO, encoding: str = ENCODING) -> AsyncIterator[list[str]]:
    """Yield the lines of a binary stream in batches as they arrive, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    # Credits bound what is read ahead: the thread takes one per chunk, the loop returns it once used.
    credits = threading.Semaphore(STDIN_QUEUE_CHUNKS)
    read = choose_reader(stream)

    def pump() -> None:
        # A thread, because stdin may be a terminal, a pipe or a file, and only a blocking read
        # works for all of them on every platform. A daemon, so a pending read never holds up exit.
        # It hands chunks over without waiting on the loop, so nothing of the loop can fail in it.
        chunk = b"x"
        while chunk:
            credits.acquire()
            try:
                chunk = read(READ_CHUNK_BYTES)
            except (OSError, ValueError):
                chunk = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: we are exiting
                return

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    framer = LineFramer(MAX_STDIN_LINE_BYTES)
    while True:
        chunk = await chunks.get()
        credits.release()
        block = framer.feed(chunk) if chunk else framer.flush()
        if block:
            yield split_stdin_block(block, encoding)
        if not chunk:
            return


async def iterate_messages(
    messages: Sequence[str], stdin: BinaryIO | None, encoding: str = ENCODING
) -> AsyncIterator[list[str]]:
    """Yield the messages to post in order and in batches, '-' standing for the lines of stdin."""
    for message in messages:
        if message != STDIN_MARK:
            yield [message]
        elif stdin is not None:
            async for batch in read_stdin_lines(stdin, encoding):
                yield batch


class Link:
    """One connection: feeds the dialogue what arrives, writes what it says, and times each reply line."""

    def __init__(
        self,
        sender: Sender,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dialogue: PostingDialogue,
        outbox: Outbox,
        wait: ReplyWait,
    ) -> None:
        self.sender = sender
        self.reader = reader
        self.writer = writer
        self.dialogue = dialogue
        self.outbox = outbox
        self.wait = wait
        self.loop = asyncio.get_running_loop()
        # When the reply now due must have arrived, whole; None while the server owes us nothing.
        self.deadline: float | None = None
        self.since = 0.0  # when the reply became due
        self.allowance = 0.0  # of the time to the deadline, how much is for the upload of our posts
        self.waiting = 0.0  # the wait the deadline was set with
        self.shown = 0  # how many posts the chat had shown when the reply became due
        self._start_clock()

    def transmit(self) -> None:
        """Write whatever the dialogue has to send; start the clock if a reply becomes due."""
        if self.writer.transport.is_closing():
            return  # what waits stays unsent, for the next connection
        pieces = self.dialogue.data_to_send()
        if not pieces:
            return
        if logger.isEnabledFor(logging.DEBUG):
            for piece in pieces:
                logger.debug(">> %r", redact(piece.decode(ENCODING), self.sender.secrets))
        data = b"".join(pieces)
        self.writer.write(data)
        if self.dialogue.waiting_for is None:
            return
        if self.deadline is None:
            self._start_clock()
        # The server cannot answer what has not reached it: a long post over a slow uplink gets the
        # time it needs at UPLOAD_FLOOR too, or it would time out, be resent and be posted again and again.
        upload = len(data) / UPLOAD_FLOOR_BYTES_PER_SECOND
        self.deadline = (self.deadline or 0.0) + upload
        self.allowance += upload

    def _start_clock(self) -> None:
        """A reply is due from now: it must come within the current wait."""
        self.since = self.loop.time()
        self.waiting = self.wait.seconds
        self.deadline = self.since + self.waiting
        self.allowance = 0.0
        self.shown = self.outbox.shown

    async def run(self) -> bool:
        """Converse until everything is posted (True) or the server closes while owing nothing (False)."""
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                self.sender.check_producer()
                self.transmit()
                if self.sender.finished:
                    return True
                if reading is None:
                    reading = asyncio.ensure_future(self.reader.read(READ_CHUNK_BYTES))
                await self._wait(reading)
                if not reading.done():
                    continue  # woken by new posts or the end of the messages
                done, reading = reading, None
                try:
                    chunk = done.result()
                except OSError as error:
                    due = self.dialogue.waiting_for
                    if due is None:
                        return False  # a reset while idle is a close while idle
                    raise ConnectionFailed(
                        f"the connection broke while we waited for {due}: {describe_error(error)}"
                    ) from error
                if not self._receive(chunk):
                    return False
        finally:
            if reading is not None:
                await cancel_and_wait(reading)
                if not reading.cancelled():
                    reading.exception()  # retrieved: the connection is going away anyway

    async def _wait(self, reading: asyncio.Future[bytes]) -> None:
        """Wait for data; with a reply due, until its deadline; without, also for new posts."""
        if self.deadline is None:
            changed = self.sender.changed
            changed.clear()
            waker = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({reading, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
            return
        remaining = self.deadline - self.loop.time()
        if remaining > 0:
            await asyncio.wait({reading}, timeout=remaining)
        if reading.done():
            return
        if self.dialogue.ready and self.outbox.oldest_sent is not None:
            self.wait.timed_out()  # the acknowledgement was late: the next wait is longer
            if self.outbox.shown > self.shown:
                # The chat shows the server taking our posts: it is slow, not gone. Hanging up now
                # would only make us send again what it is still working through.
                logger.debug("the acknowledgements are slow; waiting %g s more", self.wait.seconds)
                self.waiting = self.wait.seconds
                self.deadline = self.loop.time() + self.waiting
                self.shown = self.outbox.shown
                return
        due = self.dialogue.waiting_for or "a reply"
        hint = self.dialogue.port_hint if due == STAGE_GREETING else ""
        raise ReplyTimeout(
            f"no complete reply from the server in {self.waiting:g} s while we waited for {due}{hint}; "
            "try again later or raise --reply-timeout"
        )

    def _receive(self, chunk: bytes) -> bool:
        """Feed what arrived to the dialogue and act on every event; False once the server closed."""
        self.dialogue.receive_data(chunk)
        lines = 0
        while (event := self.dialogue.next_event()) is not None:
            if isinstance(event, Closed):
                return False
            lines += 1
            if isinstance(event, Acknowledged):
                self.wait.answered(self.loop.time() - self.since - self.allowance)
            self.sender.handle(event)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("<< %r", redact(event.line.decode(ENCODING, errors="replace"), self.sender.secrets))
        if lines:
            if self.dialogue.waiting_for is None:
                self.deadline = None
            else:
                self._start_clock()
        return True


class ChatWatch:
    """The chat as a witness: reads the reading port while we post, and hands the witness what it shows.

    Posts are held back while it connects, so the chat shows every post sent after that to us too. If the
    chat cannot be reached, or never shows our posts, it says so once and the sender goes on without it.
    """

    def __init__(
        self,
        settings: SenderSettings,
        witness: Witness,
        outbox: Outbox,
        on_seen: Callable[[Post], None],
        wake: Callable[[], None],
        quiet: bool,
    ) -> None:
        self.settings = settings
        self.witness = witness
        self.outbox = outbox
        self.on_seen = on_seen
        self.wake = wake
        self.level = logging.DEBUG if quiet else logging.INFO  # for a single message the note is noise
        self.address = format_address(settings.host, settings.read_port)
        self.nickname = ""
        self.given_up = False
        self.started = False
        self._task: asyncio.Future[None] | None = None
        self._connection: ReceivingConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0  # on the witness's clock

    def start(self) -> None:
        """Connect to the chat unless it is watched, being connected to, or given up; posts wait meanwhile."""
        if self.given_up or (self._task is not None and not self._task.done()):
            return
        self.check_task()
        self.started = True
        self.outbox.held = True
        self._task = asyncio.ensure_future(self._watch())

    def know(self, nickname: str) -> None:
        """Take the nickname our posts show under."""
        self.nickname = nickname
        self.witness.know(nickname)

    def check(self) -> None:
        """Give the witness up if it proved blind: it never showed one of our posts as it should have."""
        self.witness.check()
        self._schedule_check()
        if self.witness.blind and not self.given_up:
            self._give_up(
                f"the chat at {self.address} does not show our posts as "
                f"'{sanitize_text(self.nickname)}: <text>'; going on without it"
            )

    def check_task(self) -> None:
        """Raise what ended the watching unexpectedly, if anything did."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    def _schedule_check(self) -> None:
        """Look again when the next echo falls due, so a blind witness is noticed even if nothing else happens."""
        due = self.witness.next_due
        if due is None or self.given_up or (self._timer is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - self.witness.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.check()

    async def close(self) -> None:
        """Stop watching and wait until the connection is gone."""
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            await cancel_and_wait(self._task)
            if not self._task.cancelled():
                self._task.exception()  # retrieved: what it was is no longer of use

    def connected(self, connection: ReceivingConnection) -> None:
        """The chat connection is made (ChunkSink)."""

    def received(self, data: bytes) -> None:
        """Hand the witness what the chat sent; settle each post it shows (ChunkSink)."""
        for post in self.witness.receive_data(data):
            self.on_seen(post)
        self.check()

    async def _watch(self) -> None:
        connected = False
        try:
            settings = self.settings
            async with open_receiver(settings.host, settings.read_port, self, settings.connect_timeout) as connection:
                connected = True
                self._connection = connection
                self.witness.connect()
                self._release()
                await connection.wait_ended()
            logger.debug("the chat at %s hung up; it is watched again with the next connection", self.address)
        except (ChatError, OSError) as error:
            if not connected:
                reason = describe_error(error.__cause__ or error)
                self._give_up(f"cannot watch the chat at {self.address} for our posts: {reason}; going on without it")
            elif not self.given_up:
                logger.debug("lost the chat at %s: %s; watched again with the next connection", self.address, error)
        finally:
            self._connection = None
            self.witness.disconnect()
            self._release()

    def _give_up(self, note: str) -> None:
        self.given_up = True
        logger.log(self.level, "%s", note)
        if self._connection is not None:
            self._connection.fail(ConnectionFailed("given up"))
        self._release()

    def _release(self) -> None:
        """Let the posts go out: the chat is watched, or will not be."""
        if self.outbox.held:
            self.outbox.held = False
            self.wake()


class Sender:
    """Logs in or registers, then posts every message, reconnecting and resending what was not acknowledged."""

    def __init__(
        self,
        settings: SenderSettings,
        messages: AsyncIterator[list[str]],
        make_delays: DelayFactory = backoff,
        secrets: set[str] | None = None,
        confirm: bool = False,
    ) -> None:
        self.settings = settings
        self.confirm = confirm  # say "posted: ..." as each post is acknowledged (a person types them)
        self.messages = messages
        self.make_delays = make_delays
        self.witness = Witness()
        self.outbox = Outbox(observer=self.witness)
        self.reply_wait = ReplyWait(settings.reply_timeout)  # kept from one connection to the next
        single = not settings.streaming and len(settings.messages) <= 1
        self.watch = ChatWatch(settings, self.witness, self.outbox, self._on_seen, self._flush, quiet=single)
        self.token = settings.token
        # Live: the log filter holds the same set, so a token added here is hidden everywhere from then on.
        self.secrets = set() if secrets is None else secrets
        if settings.token:
            self.secrets.add(settings.token)
        self.account: Account | None = None
        self.registered = False  # a new account was made and its token saved
        self.welcomed = False  # some connection got as far as posting
        self.changed = asyncio.Event()  # new posts, or the end of the messages
        self._room = asyncio.Event()
        self._messages_ended = False
        self._producer: asyncio.Future[None] | None = None
        self._link: Link | None = None
        self._last_failure: ChatError | None = None  # what ended the last connection that failed

    @property
    def finished(self) -> bool:
        """Tell whether every message is posted and acknowledged."""
        return self._messages_ended and self.welcomed and not self.outbox

    async def run(self) -> None:
        """Post everything; raise what ended the work early."""
        if self.token is None:
            check_token_path(self.settings.token_path)
        self._producer = asyncio.ensure_future(self._produce())
        try:
            await self._keep_connected()
        except ChatError as error:
            if self.registered and not self.welcomed:
                raise type(error)(
                    f"{error}; the new account{self._shown_nickname()} is registered all the same and its token "
                    f"is saved in {self.settings.token_path}"
                ) from error
            raise
        finally:
            await cancel_and_wait(self._producer)
            if not self._producer.cancelled():
                self._producer.exception()  # retrieved; a failure was raised by check_producer already
            await self.watch.close()
        if self.outbox.given_up and not self.settings.streaming:
            # Fixed messages are a task with an end: one that may not have arrived is a failure to say.
            cause = f"{self._last_failure}; " if self._last_failure else ""
            raise ConnectionFailed(cause + self.summary())
        if self.outbox.added:
            self.report(logging.WARNING if self.outbox.given_up else logging.INFO)

    def report(self, level: int, prefix: str = "") -> None:
        """Log how many messages were posted and how many were not."""
        logger.log(level, "%s", prefix + self.summary())

    def summary(self) -> str:
        """Say what became of the messages: counted as messages, never as sends."""
        author = f" as {sanitize_text(self.account.nickname)}" if self.account else ""
        return describe_counts(self.outbox, author)

    def check_producer(self) -> None:
        """Raise what made reading the messages, or watching the chat, fail, if anything did."""
        self.watch.check_task()
        producer = self._producer
        if producer is not None and producer.done() and not producer.cancelled():
            error = producer.exception()
            if error is not None:
                raise error

    async def _produce(self) -> None:
        """Move the messages into the outbox as fast as the outbox takes them."""
        try:
            async for batch in self.messages:
                for text in batch:
                    if is_blank(text):
                        logger.debug("skipping an empty line of stdin")
                        continue
                    if self.outbox.full:
                        self._flush()
                        logger.debug("the outbox is full; stdin waits for acknowledgements")
                        self._room.clear()
                        await self._room.wait()
                    self.outbox.add(text)
                self._flush()
            self._messages_ended = True
        finally:
            self.changed.set()

    def _flush(self) -> None:
        """Send the new posts if a connection takes them now; wake whoever waits for posts."""
        if not self.watch.started:
            self._watch_chat()  # the first post is about to go out: the chat must be watched by then
        if self._link is not None:
            self._link.transmit()
        self.changed.set()

    async def _keep_connected(self) -> None:
        """Connect as long as there is something to do; back off and retry after losing a connection."""
        delays = self.make_delays()
        failures = 0
        while True:
            self.check_producer()
            if self._messages_ended and not self.outbox.added and self.token is not None and not self.settings.check:
                return  # the messages ended with nothing to post, so there is nothing to connect for
            if self.welcomed and not self.outbox:
                if self._messages_ended:
                    return
                # Nothing to post: connect again only once there is (an idle server may hang up on us).
                self.changed.clear()
                await self.changed.wait()
                continue
            delivered = self.outbox.delivered
            try:
                if await self._converse():
                    return
                continue  # closed while idle
            except ChatError as error:
                if not is_retryable(error):
                    raise
                if self.outbox.delivered > delivered:
                    delays, failures = self.make_delays(), 0
                failures += 1
                self._last_failure = error
                if self.finished:
                    return  # what the connection left unsettled was given up: there is nothing left to post
                if not self.settings.streaming and (not self.welcomed or failures > RESUME_TRIES):
                    # Fixed messages fail fast when no connection can be made at all, and after a few
                    # fruitless tries; only a stream is worth waiting for indefinitely.
                    if self.welcomed:
                        raise type(error)(f"{error}; gave up after {RESUME_TRIES} tries") from error
                    raise
                delay = next(delays)
                waiting = f" ({plural(len(self.outbox), 'message')} waiting)" if self.outbox else ""
                logger.warning("%s; trying again in %.1f s%s", error, delay, waiting)
                await asyncio.sleep(delay)

    async def _converse(self) -> bool:
        """Hold one connection; True once everything is posted, False if it closed while idle."""
        settings = self.settings
        self._watch_chat()
        dialogue = PostingDialogue(
            self.outbox,
            self.token,
            settings.nickname if self.token is None else None,
            settings.token_source,
            self.secrets,
            reading_port_hint(settings.port),
        )
        try:
            async with open_connection(settings.host, settings.port, settings.connect_timeout) as (reader, writer):
                self._link = Link(self, reader, writer, dialogue, self.outbox, self.reply_wait)
                try:
                    done = await self._link.run()
                finally:
                    self._link = None
        except ChatError:
            self._take_stock()
            raise
        self._take_stock()
        return done

    def _take_stock(self) -> None:
        """After a connection: what it did not settle goes out again on the next, or is given up."""
        self.outbox.rewind()
        for post in self.outbox.take_given_up():
            logger.warning(
                "message %d got no acknowledgement in %d tries; it is not sent again (it may have reached the chat)",
                post.number,
                MAX_MISSES,
            )
        self._check_room()

    def _watch_chat(self) -> None:
        """Watch the chat (again) if there is something to post and it is not watched."""
        if self.outbox and not self.settings.check:
            self.watch.start()

    def _check_room(self) -> None:
        """Let stdin go on once the outbox has drained to half."""
        if not self._room.is_set() and self.outbox.roomy:
            self._room.set()

    def _on_seen(self, post: Post) -> None:
        """The chat showed a post: it has arrived, acknowledged or not, and is never sent again."""
        if self.outbox.see(post):
            self._confirm(post)
            self._check_room()
            self.changed.set()  # the end may have come, or a post the connection waited for

    def _confirm(self, post: Post) -> None:
        if self.confirm:
            logger.info("posted: %s", shorten(post.text, CONFIRM_CHARS))

    def handle(self, event: Event) -> None:
        """Act on what the server said."""
        if isinstance(event, Acknowledged):
            if event.fresh:
                self._confirm(event.post)
            self._check_room()
            self.watch.check()
        elif isinstance(event, Registered):
            self._save_account(event.account)
        elif isinstance(event, LoggedIn):
            first = self.account is None
            self.account = event.account
            self.watch.know(event.account.nickname)
            self.secrets.add(event.account.token)
            logger.log(
                logging.INFO if first else logging.DEBUG, "logged in as %s", sanitize_text(event.account.nickname)
            )
        elif isinstance(event, Welcomed):
            self.welcomed = True
            if self.outbox.rewound:
                logger.info(
                    "sending %s again that the server had not acknowledged when the connection was lost",
                    plural(self.outbox.rewound, "message"),
                )

    def _shown_nickname(self) -> str:
        """Return " <nickname>", escaped, or "" when the server never said it."""
        nickname = self.account.nickname if self.account else ""
        return f" {sanitize_text(nickname)}" if nickname else ""

    def _save_account(self, account: Account) -> None:
        """Save a new account's token at once, before anything else is read; if that fails, show it."""
        self.account = account
        self.watch.know(account.nickname)
        self.token = account.token
        self.secrets.add(account.token)
        nickname = sanitize_text(account.nickname)
        path = self.settings.token_path
        # Synchronous on purpose: no signal or cancellation can come between the reply and the save.
        try:
            save_token(path, account.token)
        except FileError as error:
            # The only copy of the token is in memory: printed (not logged, which hides it), it is not lost.
            print(describe_unsaved_token(nickname, account.token, path, error), file=sys.stderr, flush=True)
            raise FileError(f"{error}; the token of the new account is printed above") from error
        self.registered = True
        if account.nickname:
            logger.info("registered as %s; the token is saved in %s", nickname, path)
        else:
            logger.info("registered a new account (the reply does not name it); the token is saved in %s", path)


def describe_counts(outbox: Outbox, author: str) -> str:
    """Say what became of the messages of an outbox: how many posted, sent more than once, may not have arrived."""
    text = f"posted {plural(outbox.delivered, 'message')}{author}"
    if outbox.repeated:
        one = outbox.repeated == 1
        text += (
            f"; {plural(outbox.repeated, 'message')} {'was' if one else 'were'} sent more than once, so the chat "
            f"may show {'it' if one else 'one of them'} up to {outbox.most_sends} times"
        )
    if outbox.given_up:
        one = outbox.given_up == 1
        text += (
            f"; {plural(outbox.given_up, 'message')} {'was' if one else 'were'} not sent again after {MAX_MISSES} "
            f"tries without an acknowledgement: {'it' if one else 'they'} may have reached the chat"
        )
    if outbox:
        text += f"; {len(outbox)} more not acknowledged, so maybe not posted"
    return text


def describe_unsaved_token(nickname: str, token: str, path: Path, error: FileError) -> str:
    """Say, for stderr, that a new account's token could not be saved: what the token is and where it can go."""
    shown = sanitize_text(token)
    nickname = f" {nickname}" if nickname else ""
    if isinstance(error, TokenFileTaken):
        # The file keeps the other account's token; this one needs a place of its own.
        return (
            f"The new account{nickname} is registered, but its token could not be saved: {path} holds another "
            f"account's token, saved there meanwhile, which is kept. Its token is {shown} ; put it in a token file "
            "of its own and give that with --token_path, or as TOKEN in .env, or the account is lost."
        )
    return (
        f"The new account{nickname} is registered, but its token could not be saved. "
        f"Its token is {shown} ; put it in {path} (or TOKEN in .env), or the account is lost."
    )


async def send(settings: SenderSettings, stdin: BinaryIO | None, make_delays: DelayFactory = backoff) -> Sender:
    """Log in or register, then post the messages; return the sender with its counts."""
    sender = make_sender(settings, stdin, make_delays)
    await sender.run()
    return sender


def make_sender(
    settings: SenderSettings,
    stdin: BinaryIO | None,
    make_delays: DelayFactory = backoff,
    encoding: str = ENCODING,
    secrets: set[str] | None = None,
    confirm: bool = False,
) -> Sender:
    """Return a sender for the settings, with stdin standing for '-', secrets to keep hidden, posts confirmed or not."""
    bare = settings.token is not None and not settings.check  # a bare login posts the test message
    messages = settings.messages or ((DEFAULT_MESSAGE,) if bare else ())
    return Sender(settings, iterate_messages(messages, stdin, encoding), make_delays, secrets, confirm)


async def run(
    settings: SenderSettings,
    stdin: BinaryIO | None,
    make_delays: DelayFactory = backoff,
    encoding: str = ENCODING,
    secrets: set[str] | None = None,
    confirm: bool = False,
) -> int:
    """Send until done or a signal; return the exit code."""
    sender = make_sender(settings, stdin, make_delays, encoding, secrets, confirm)
    with SignalCatcher() as signals:
        try:
            signum = await run_until_signal(sender.run(), signals)
        except asyncio.CancelledError:
            # Where signals cannot be caught (Windows), asyncio.run turns Ctrl-C into a cancellation.
            sender.report(logging.WARNING, "interrupted: ")
            raise
        if signum is not None:
            sender.report(logging.WARNING, "interrupted: ")
            return signals.exit_code
    if settings.check and sender.account is not None:
        print(sanitize_text(sender.account.nickname), flush=True)  # who the token logs in as: the output
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
    interactive = sys.stdin is not None and sys.stdin.isatty()
    secrets: set[str] = set()  # the tokens the sender learns; every log line hides them

    def parse() -> SenderSettings:
        return parse_settings(argv, ask_nickname=ask_nickname if interactive else None)

    async def start(settings: SenderSettings) -> int:
        stdin = None
        if settings.streaming:
            if sys.stdin is None:
                logger.error("--message %s reads stdin, but stdin is closed", STDIN_MARK)
                return EXIT_USAGE
            if interactive:
                print(STDIN_HINT, file=sys.stderr, flush=True)
            stdin = sys.stdin.buffer
        encoding = getattr(sys.stdin, "encoding", None) or ENCODING
        # Someone typing on a terminal sees each post go out; a pipe's posts are summed up at the end.
        confirm = interactive and settings.streaming
        return await run(settings, stdin, encoding=encoding, secrets=secrets, confirm=confirm)

    return run_cli(parse, start, logger, secrets)


if __name__ == "__main__":
    sys.exit(main())
