"""Posting: the feed of messages, one connection to the posting port, the account, and the sender over them."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

from _minechat.dialogue import (
    READING_PORT_HINT,
    STAGE_GREETING,
    Account,
    Acknowledged,
    Closed,
    Event,
    LoggedIn,
    PostingDialogue,
    Registered,
    Welcomed,
    hide_account_hashes,
    is_blank,
)
from _minechat.outbox import MAX_SENDS, Outbox, Post
from _minechat.reply_clock import ReplyClock
from _minechat.sender_settings import SenderSettings
from _minechat.shutdown import cancel_and_wait
from _minechat.token_file import TokenTaken, check_token_path, save_token
from _minechat.witness import ChatWitness, NoWitness
from chat_io import (
    DEFAULT_SEND_PORT,
    ENCODING,
    READ_CHUNK_BYTES,
    ChatError,
    ConnectionFailed,
    DelayFactory,
    FileError,
    ReplyTimeout,
    backoff,
    describe_error,
    is_retryable,
    open_connection,
    plural,
    redact,
    sanitize_text,
    shorten,
)

# The sender's log: -v and the tests listen to it under the script's name.
logger = logging.getLogger("send_client")

# With fixed messages, a connection lost after login is tried again this many times without progress.
RESUME_TRIES = 5
# A confirmation on the terminal shows this much of the post.
CONFIRM_LIMIT = 60

AnyWitness = ChatWitness | NoWitness


def hide_secrets(line: bytes, secrets: set[str]) -> str:
    """Return a reply line for the log: every known secret, and any account hash however spelt, hidden."""
    return hide_account_hashes(redact(line.decode(ENCODING, errors="replace"), secrets))


def print_safely(text: str) -> None:
    """Print a line on stderr, unless stderr is full or closed."""
    with suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


class MessageFeed:
    """Moves the messages into the outbox as fast as it takes them: while it is full, the messages wait."""

    def __init__(self, messages: AsyncIterator[list[str]], outbox: Outbox) -> None:
        self.messages = messages
        self.outbox = outbox
        self.changed = asyncio.Event()  # new posts, or the end of the messages
        self.ended = False
        self._room = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Start reading the messages."""
        self._task = asyncio.ensure_future(self._produce())

    def check(self) -> None:
        """Raise what made reading the messages fail, if it did."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error

    async def stop(self) -> None:
        """Stop reading the messages."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)  # what it raised is retrieved; a failure was raised by check already

    def note_room(self) -> None:
        """Wake the messages if they wait for room and the outbox has drained enough, however posts left it."""
        if not self._room.is_set() and self.outbox.roomy:
            self._room.set()

    async def _produce(self) -> None:
        try:
            async for batch in self.messages:
                for text in batch:
                    await self._add(text)
                self.changed.set()
            self.ended = True
        finally:
            self.changed.set()

    async def _add(self, text: str) -> None:
        if is_blank(text):
            logger.debug("skipping an empty line of stdin")
            return
        if self.outbox.full:
            self.changed.set()  # what the outbox holds goes out first
            logger.debug("the outbox is full; stdin waits for acknowledgements")
            self._room.clear()
            await self._room.wait()
        self.outbox.add(text)


class PostingConnection:
    """One connection to the posting port: feeds its dialogue what arrives, writes what it says, times replies."""

    def __init__(
        self,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        dialogue: PostingDialogue,
        clock: ReplyClock,
        witness: AnyWitness,
        feed: MessageFeed,
        on_event: Callable[[Event], None],
        secrets: set[str],
        hint: bool = False,
    ) -> None:
        self.reader, self.writer = streams
        self.dialogue = dialogue
        self.outbox = feed.outbox
        self.clock = clock
        self.witness = witness
        self.feed = feed
        self.on_event = on_event  # told of every reply line's meaning, at once
        self.secrets = secrets
        self.hint = hint  # whether "is this the reading port?" can be right
        self.loop = asyncio.get_running_loop()
        self._waker: asyncio.Future[bool] | None = None  # done once new posts or the end of them came
        clock.connect(self.loop.time(), self.outbox.shown)

    @property
    def finished(self) -> bool:
        """Tell whether every message is posted and acknowledged."""
        return self.feed.ended and self.dialogue.ready and not self.outbox

    def transmit(self) -> None:
        """Write whatever the dialogue has to send; start the clock if a reply becomes due."""
        if self.writer.transport.is_closing():
            return  # what waits stays unsent, for the next connection
        pieces = self.dialogue.data_to_send()
        self.witness.expect(self.outbox.take_sends())
        self.feed.note_room()  # posts the chat showed left the outbox unsent
        if not pieces:
            return
        if logger.isEnabledFor(logging.DEBUG):
            for piece in pieces:
                logger.debug(">> %r", redact(piece.decode(ENCODING), self.secrets))
        data = b"".join(pieces)
        self.writer.write(data)
        owed = self.dialogue.waiting_for is not None
        self.clock.sent(self.loop.time(), len(data), owed, self.dialogue.ready, self.outbox.shown)

    async def run(self) -> bool:
        """Converse until everything is posted (True) or the server closes while owing nothing (False)."""
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                self.feed.check()
                self.transmit()
                if self.finished:
                    return True
                if reading is None:
                    reading = asyncio.ensure_future(self.reader.read(READ_CHUNK_BYTES))
                await self._wait(reading)
                if not reading.done():
                    continue  # woken by new posts or the end of the messages
                done, reading = reading, None
                chunk = self._result(done)
                if chunk is None or not self._receive(chunk):
                    return False
        finally:
            if self._waker is not None:
                self._waker.cancel()
            if reading is not None:
                await cancel_and_wait(reading)  # what it raised is retrieved: the connection is going away anyway

    def _result(self, done: asyncio.Future[bytes]) -> bytes | None:
        """Return what a read brought; None for a reset while the server owed nothing, a close while idle."""
        try:
            return done.result()
        except OSError as error:
            due = self.dialogue.waiting_for
            if due is None:
                return None
            raise ConnectionFailed(
                f"the connection broke while we waited for {due}: {describe_error(error)}"
            ) from error

    async def _wait(self, reading: asyncio.Future[bytes]) -> None:
        """Wait for data or new posts; with a reply due, until its deadline, and give up on it after."""
        remaining = self.clock.remaining(self.loop.time())
        if remaining is None or remaining > 0:
            if self._waker is None or self._waker.done():
                # Kept from one wait to the next: a task per wait would cost as much as a post.
                self.feed.changed.clear()  # what it announced went out with the last transmit
                self._waker = asyncio.ensure_future(self.feed.changed.wait())
            await asyncio.wait({reading, self._waker}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            remaining = self.clock.remaining(self.loop.time())
        if not reading.done() and remaining is not None and remaining <= 0:
            self._expire()

    def _expire(self) -> None:
        """The reply due is late: wait longer for a slow server, or raise ReplyTimeout."""
        dialogue = self.dialogue
        waited = self.clock.expire(self.loop.time(), dialogue.ready, self.outbox.shown)
        if waited is None:
            logger.debug(
                "the acknowledgements are late but the chat shows our posts; waiting %g s more", self.clock.waited
            )
            return
        due = dialogue.waiting_for or "a reply"
        hint = READING_PORT_HINT if due == STAGE_GREETING and self.hint else ""
        advice = "try again later or raise --reply-timeout"
        if dialogue.ready:
            self.outbox.time_out()
            advice = f"waiting up to {self.clock.ack_wait:g} s for acknowledgements from now on"
        raise ReplyTimeout(
            f"no complete reply from the server in {waited:g} s while we waited for {due}{hint}; {advice}"
        )

    def _receive(self, chunk: bytes) -> bool:
        """Feed what arrived to the dialogue and pass on every event; False once the server closed."""
        self.dialogue.receive_data(chunk)
        lines = 0
        while (event := self.dialogue.next_event()) is not None:
            if isinstance(event, Closed):
                return False
            lines += 1
            if isinstance(event, Acknowledged):
                self.clock.acknowledged(self.loop.time())
            self.on_event(event)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("<< %r", hide_secrets(event.line, self.secrets))
        if not lines:
            logger.debug("<< %d bytes of a line not ended yet", self.dialogue.unfinished_bytes)
        else:
            owed = self.dialogue.waiting_for is not None
            self.clock.replied(self.loop.time(), owed, self.dialogue.ready, self.outbox.shown)
        return True


class AccountKeeper:
    """The account we post as: a new one's token is saved at once, or printed where it cannot be."""

    def __init__(self, token: str | None, token_path: object, secrets: set[str]) -> None:
        self.token = token
        self.token_path = token_path
        self.secrets = secrets  # the caller's set, which its log filter reads
        if token:
            secrets.add(token)
        self.account: Account | None = None
        self.registered = False  # a new account was made and its token saved

    def log_in(self, account: Account) -> bool:
        """Note the account the server knows the token of; True the first time."""
        first = self.account is None
        self.account = account
        self.secrets.add(account.token)
        return first

    def salvage(self, dialogue: PostingDialogue) -> None:
        """Save a new account whose reply was whole but never ended, as the connection goes for any reason."""
        account = dialogue.salvage_account() if self.token is None else None
        if account is None:
            return
        with suppress(FileError):  # its token is printed; what ended the connection is the error to report
            self.save(account)

    def explain(self, error: ChatError) -> ChatError:
        """Add to an error that ended the run before posting that the new account is saved all the same."""
        nickname = sanitize_text(self.account.nickname if self.account else "")
        saved = f"is registered all the same and its token is saved in {self.token_path}"
        return type(error)(f"{error}; the new account {nickname} {saved}")

    def save(self, account: Account) -> None:
        """Save a new account's token at once, before anything else is read; if that fails, show it."""
        self.account = account
        self.token = account.token
        self.secrets.add(account.token)
        nickname = sanitize_text(account.nickname)
        path = self.token_path
        # Synchronous on purpose: no signal or cancellation can come between the reply and the save.
        try:
            save_token(path, account.token)
        except FileError as error:
            # The only copy of the token is in memory: printed (not logged, which hides it), it is not lost.
            if isinstance(error, TokenTaken):
                problem = f"{path} holds the token of another account, saved meanwhile, and keeps it"
                where = "a token file of its own (--token_path)"
            else:
                problem = "its token could not be saved"
                where = str(path)
            print_safely(
                f"The new account {nickname} is registered, but {problem}. "
                f"Its token is {sanitize_text(account.token)} ; put it in {where} (or TOKEN in .env), "
                "or the account is lost."
            )
            raise FileError(f"{error}; the token of the new account is printed above") from error
        self.registered = True
        logger.info("registered as %s; the token is saved in %s", nickname, path)


class Sender:
    """Logs in or registers, then posts every message, reconnecting and resending what was not acknowledged."""

    def __init__(
        self,
        settings: SenderSettings,
        messages: AsyncIterator[list[str]],
        make_delays: DelayFactory = backoff,
        witness_level: int | None = logging.INFO,
        confirm: bool = False,
        secrets: set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.make_delays = make_delays
        self.outbox = Outbox()
        self.clock = ReplyClock(settings.reply_timeout)
        # With nothing to post (no witness_level), there is nothing to watch the chat for.
        self.feed = MessageFeed(messages, self.outbox)
        self.witness: AnyWitness = (
            NoWitness()
            if witness_level is None
            else ChatWitness(settings, witness_level, self.outbox, self.feed.changed.set)
        )
        # The caller's set, which its log filter reads: tokens learnt here are hidden in every log line.
        self.keeper = AccountKeeper(settings.token, settings.token_path, secrets if secrets is not None else set())
        self.welcomed = False  # some connection got as far as posting
        self.confirm = confirm  # a person types the posts: say as each one is acknowledged
        self._last_failure: ChatError | None = None  # what ended the last connection that failed

    async def run(self) -> None:
        """Post everything; raise what ended the work early."""
        if self.keeper.token is None:
            check_token_path(self.settings.token_path)
        try:
            # Before the first post: the chat shows a post only to readers connected when it comes.
            await self.witness.start()
            self.feed.start()
            await self._keep_connected()
        except ChatError as error:
            if self.keeper.registered and not self.welcomed:
                raise self.keeper.explain(error) from error
            if self.welcomed and self.outbox.added:
                self.report(logging.WARNING)  # what went through, before the error: a rerun would post it again
            raise
        finally:
            await self.feed.stop()
            await self.witness.stop()
        if self.outbox.added:
            self.report(logging.WARNING if self.outbox.doubtful else logging.INFO)
        if self.outbox.doubtful:
            cause = f"{self._last_failure}; " if self._last_failure is not None else ""  # why, the last time
            raise ConnectionFailed(
                f"{cause}{plural(self.outbox.doubtful, 'message')} went out {MAX_SENDS} times without an "
                "acknowledgement and may have reached the chat, or not"
            )

    def report(self, level: int, prefix: str = "") -> None:
        """Log how many messages were posted, how many may show more than once and how many may be missing."""
        outbox = self.outbox
        account = self.keeper.account
        author = f" as {sanitize_text(account.nickname)}" if account else ""
        text = f"{prefix}posted {plural(outbox.delivered, 'message')}{author}"
        if outbox.seen_only:  # the chat showed them, the server never said so: told apart
            text += f" ({outbox.acknowledged} acknowledged, {outbox.seen_only} only seen in the chat)"
        if outbox.repeated:
            text += (
                f"; {plural(outbox.repeated, 'message')} had to be sent more than once, "
                f"so the chat may show up to {outbox.most_copies} copies of one"
            )
        if outbox.doubtful:
            text += (
                f"; {plural(outbox.doubtful, 'message')} sent {MAX_SENDS} times without an acknowledgement "
                "may have reached the chat, or not"
            )
        if outbox:
            text += f"; {len(outbox)} more not acknowledged, so maybe not posted"
        logger.log(level, "%s", text)

    async def _keep_connected(self) -> None:
        """Connect as long as there is something to do; back off and retry after losing a connection."""
        delays = self.make_delays()
        failures = 0
        while await self._wait_for_work():
            settled = self._settled()
            try:
                if await self._converse():
                    return
                # Closed while idle: not a failure, so no delay; a connection is made when a post comes.
                logger.debug("the server closed the idle connection")
            except ChatError as error:
                if not is_retryable(error):
                    raise
                self._last_failure = error
                if self._settled() > settled:  # progress, or a post given up: the next one deserves fresh tries
                    delays, failures = self.make_delays(), 0
                failures += 1
                self._give_up_early(error, failures)
                await self._pause(error, next(delays))

    def _settled(self) -> int:
        """Return how many posts have left the outbox for good: delivered or given up."""
        return self.outbox.delivered + self.outbox.doubtful

    async def _wait_for_work(self) -> bool:
        """Wait until there is something to connect for; False once there never will be."""
        while True:
            self.feed.check()
            if self.feed.ended and not self.outbox.added and self.keeper.token is not None:
                return False  # the messages ended with nothing to post, so there is nothing to connect for
            if not self.welcomed or self.outbox:
                return True
            if self.feed.ended:
                return False
            # Nothing to post: connect again only once there is (an idle server may hang up on us).
            self.feed.changed.clear()
            await self.feed.changed.wait()

    def _give_up_early(self, error: ChatError, failures: int) -> None:
        """Raise for fixed messages when no connection can be made at all, or after a few fruitless tries."""
        # Only a stream is worth waiting for indefinitely.
        if self.settings.streaming or (self.welcomed and failures <= RESUME_TRIES):
            return
        if self.welcomed:
            raise type(error)(f"{error}; gave up after {RESUME_TRIES} tries") from error
        raise error

    async def _pause(self, error: ChatError, delay: float) -> None:
        waiting = f" ({plural(len(self.outbox), 'message')} waiting)" if self.outbox else ""
        logger.warning("%s; trying again in %.1f s%s", error, delay, waiting)
        await asyncio.sleep(delay)

    async def _converse(self) -> bool:
        """Hold one connection; True once everything is posted, False if it closed while idle."""
        settings = self.settings
        if self.witness.lost:
            await self.witness.start()  # before anything goes out on this connection, as at the start
        self.witness.next_connection()
        token = self.keeper.token
        hint = reading_port_hint(settings)
        dialogue = PostingDialogue(
            self.outbox, token, settings.nickname if token is None else None, settings.token_source, hint
        )
        try:
            async with open_connection(settings.host, settings.port, settings.connect_timeout) as streams:
                connection = PostingConnection(
                    streams, dialogue, self.clock, self.witness, self.feed, self.handle, self.keeper.secrets, hint
                )
                try:
                    return await connection.run()
                finally:
                    self.keeper.salvage(dialogue)
        except ReplyTimeout:
            raise  # counted as a timeout already, for every post in flight
        except ConnectionFailed:
            # Lost while the oldest post in flight waited for its acknowledgement: the server may have taken
            # it and hung up; one that does so every time must not get the post every time.
            self.outbox.lose_connection()
            raise
        finally:
            # At once, so the counts are right and the posts given up are known before the next try.
            self.outbox.rewind()
            self.feed.note_room()  # posts seen in the chat or given up left the outbox

    def handle(self, event: Event) -> None:
        """Act on what the server said."""
        if isinstance(event, Acknowledged):
            self._on_acknowledged(event.post)
        elif isinstance(event, Registered):
            self.keeper.save(event.account)
            if event.malformed:
                logger.warning("the registration reply was not in the usual shape, but named the new account's token")
            self.witness.set_nickname(event.account.nickname)
        elif isinstance(event, LoggedIn):
            first = self.keeper.log_in(event.account)
            self.witness.set_nickname(event.account.nickname)
            nickname = sanitize_text(event.account.nickname)
            logger.log(logging.INFO if first else logging.DEBUG, "logged in as %s", nickname)
        elif isinstance(event, Welcomed):
            self._on_welcomed()

    def _on_acknowledged(self, post: Post) -> None:
        self.witness.note_acknowledged()
        if self.confirm:
            self._confirm(post)
        self.feed.note_room()

    def _on_welcomed(self) -> None:
        self.welcomed = True
        if self.outbox.rewound:
            logger.info(
                "sending %s again that the server had not acknowledged when the connection was lost",
                plural(self.outbox.rewound, "message"),
            )

    def _confirm(self, post: Post) -> None:
        """Tell the person at the terminal that a post is in the chat, in one short line on stderr."""
        text = post.data[: -2 * len(b"\n")].decode(ENCODING, errors="replace")
        with suppress(OSError, ValueError):  # a dead stderr takes no confirmation; posting goes on
            print(f"posted: {shorten(sanitize_text(text), CONFIRM_LIMIT)}", file=sys.stderr, flush=True)


def reading_port_hint(settings: SenderSettings) -> bool:
    """Tell whether "is this the reading port?" can be right: not when --port is the posting port already."""
    return settings.port != DEFAULT_SEND_PORT


async def check_account(settings: SenderSettings) -> Account:
    """Log in and return the account, posting nothing; raise UnknownTokenError for an unknown token."""
    assert settings.token is not None
    dialogue = PostingDialogue(Outbox(), settings.token, None, settings.token_source, reading_port_hint(settings))
    async with open_connection(settings.host, settings.port, settings.connect_timeout) as (reader, writer):
        while True:
            for piece in dialogue.data_to_send():
                logger.debug(">> %r", redact(piece.decode(ENCODING), {settings.token}))
                writer.write(piece)
            dialogue.receive_data(await read_reply(reader, settings.reply_timeout, dialogue))
            while (event := dialogue.next_event()) is not None:
                logger.debug("<< %r", hide_secrets(event.line, {settings.token}))
                if isinstance(event, LoggedIn):
                    return event.account


async def read_reply(reader: asyncio.StreamReader, timeout: float, dialogue: PostingDialogue) -> bytes:
    """Read what the server says next, within timeout; raise ReplyTimeout or ConnectionFailed."""
    reading = asyncio.ensure_future(reader.read(READ_CHUNK_BYTES))
    try:
        # asyncio.wait, not wait_for: before Python 3.12 wait_for can swallow a cancellation.
        await asyncio.wait({reading}, timeout=timeout)
    finally:
        if not reading.done():
            await cancel_and_wait(reading)
    if reading.cancelled():
        raise ReplyTimeout(
            f"no reply from the server in {timeout:g} s while we waited for "
            f"{dialogue.waiting_for}; try again later or raise --reply-timeout"
        )
    try:
        return reading.result()
    except OSError as error:
        raise ConnectionFailed(f"the connection broke while logging in: {describe_error(error)}") from error
