"""The posting connection and the sender that keeps posting through lost connections, and --check."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
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
    is_blank,
)
from _minechat.outbox import MAX_SENDS, Outbox, Post
from _minechat.output import plural
from _minechat.settings import SenderSettings
from _minechat.shutdown import cancel_and_wait
from _minechat.witness import ChatWitness
from chat_io import (
    DEFAULT_SEND_PORT,
    ENCODING,
    READ_CHUNK_BYTES,
    ChatError,
    ConnectionFailed,
    DelayFactory,
    FileError,
    ReplyTimeout,
    TokenTaken,
    backoff,
    check_token_path,
    describe_error,
    is_retryable,
    open_connection,
    redact,
    sanitize_text,
    save_token,
    shorten,
)

# The sender's log: -v and the tests listen to it under the script's name.
logger = logging.getLogger("send_client")

# With fixed messages, a connection lost after login is tried again this many times without progress.
RESUME_TRIES = 5
# The slowest uplink a reply deadline allows for, on top of --reply-timeout (a 1 MiB post: 32 s more).
UPLOAD_FLOOR_BYTES_PER_SECOND = 32 * 1024
# Each reply timeout after a post doubles the wait for acknowledgements, up to this: a slow server gets
# the time it needs instead of the same posts again and again. Acknowledgements on time start it over.
ACK_WAIT_FACTOR = 2.0
MAX_ACK_WAIT = 240.0
# A confirmation on the terminal shows this much of the post.
CONFIRM_LIMIT = 60


class Link:
    """One connection: feeds the dialogue what arrives, writes what it says, and times each reply line."""

    def __init__(
        self, sender: Sender, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dialogue: PostingDialogue
    ) -> None:
        self.sender = sender
        self.reader = reader
        self.writer = writer
        self.dialogue = dialogue
        self.timeout = sender.settings.reply_timeout
        self.loop = asyncio.get_running_loop()
        # When the reply now due must have arrived, whole; None while the server owes us nothing.
        self.deadline: float | None = self.loop.time() + self.timeout
        self.clock_started = self.loop.time()  # when the reply now due started to be due
        self.waited = self.timeout  # the wait the deadline allows, without upload time
        self.shown_at_clock = sender.outbox.shown  # posts the chat had shown when the wait began

    def _start_clock(self, extra: float = 0.0) -> None:
        """Start waiting for the reply now due: acknowledgements get the sender's current wait."""
        now = self.loop.time()
        self.waited = self.sender.ack_wait if self.dialogue.ready else self.timeout
        self.clock_started = now
        self.deadline = now + self.waited + extra
        self.shown_at_clock = self.sender.outbox.shown

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
        # The server cannot answer what has not reached it: a long post over a slow uplink gets the
        # time it needs at UPLOAD_FLOOR too, or it would time out, be resent and be posted again and again.
        upload = len(data) / UPLOAD_FLOOR_BYTES_PER_SECOND
        if self.deadline is None:
            self._start_clock(upload)
        else:
            self.deadline += upload

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
        if not reading.done():
            due = self.dialogue.waiting_for or "a reply"
            hint = READING_PORT_HINT if due == STAGE_GREETING and reading_port_hint(self.sender.settings) else ""
            advice = "try again later or raise --reply-timeout"
            if self.dialogue.ready and self.sender.outbox.shown > self.shown_at_clock:
                # The chat shows the server taking our posts meanwhile: it is slow, not gone. Hanging up
                # would only make us send again what it is still working through; wait longer instead.
                self.waited = self.sender.stretch_ack_wait()
                self.deadline = self.loop.time() + self.waited
                self.shown_at_clock = self.sender.outbox.shown
                logger.debug(
                    "the acknowledgements are late but the chat shows our posts; waiting %g s more", self.waited
                )
                return
            if self.dialogue.ready:
                self.sender.outbox.time_out()
                advice = f"waiting up to {self.sender.stretch_ack_wait():g} s for acknowledgements from now on"
            raise ReplyTimeout(
                f"no complete reply from the server in {self.waited:g} s while we waited for {due}{hint}; {advice}"
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
                now = self.loop.time()
                if now - self.clock_started <= self.timeout:
                    self.sender.reset_ack_wait()
                self.clock_started = now  # the next acknowledgement is due from now on
            self.sender.handle(event)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("<< %r", redact(event.line.decode(ENCODING, errors="replace"), self.sender.secrets))
        if not lines and logger.isEnabledFor(logging.DEBUG):
            logger.debug("<< %d bytes of a line not ended yet", self.dialogue.unfinished_bytes)
        if lines:
            if self.dialogue.waiting_for is None:
                self.deadline = None
            else:
                self._start_clock()
        return True


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
        self.messages = messages
        self.make_delays = make_delays
        self.outbox = Outbox()
        # None: nothing will be posted, so there is nothing to watch the chat for.
        self.witness = None if witness_level is None else ChatWitness(settings, witness_level)
        if self.witness is not None:
            self.outbox.on_send = self.witness.expect
            self.witness.on_seen = self.outbox.note_shown
        self.token = settings.token
        # The caller's set, which its log filter reads: tokens learnt here are hidden in every log line.
        self.secrets = secrets if secrets is not None else set()
        if settings.token:
            self.secrets.add(settings.token)
        self.account: Account | None = None
        self.registered = False  # a new account was made and its token saved
        self.welcomed = False  # some connection got as far as posting
        self.confirm = confirm  # a person types the posts: say as each one is acknowledged
        self.ack_wait = settings.reply_timeout  # how long acknowledgements may take, stretched by timeouts
        self.changed = asyncio.Event()  # new posts, or the end of the messages
        self._room = asyncio.Event()
        self._messages_ended = False
        self._producer: asyncio.Future[None] | None = None
        self._link: Link | None = None
        self._last_failure: ChatError | None = None  # what ended the last connection that failed

    def stretch_ack_wait(self) -> float:
        """Double the wait for acknowledgements after a reply timeout, up to MAX_ACK_WAIT; return it."""
        self.ack_wait = min(max(self.ack_wait * ACK_WAIT_FACTOR, self.settings.reply_timeout), MAX_ACK_WAIT)
        return self.ack_wait

    def reset_ack_wait(self) -> None:
        """Wait for acknowledgements as long as --reply-timeout says again: they come on time."""
        self.ack_wait = self.settings.reply_timeout

    @property
    def finished(self) -> bool:
        """Tell whether every message is posted and acknowledged."""
        return self._messages_ended and self.welcomed and not self.outbox

    async def run(self) -> None:
        """Post everything; raise what ended the work early."""
        if self.token is None:
            check_token_path(self.settings.token_path)
        try:
            if self.witness is not None:
                # Before the first post: the chat shows a post only to readers connected when it comes.
                await self.witness.start()
            self._producer = asyncio.ensure_future(self._produce())
            await self._keep_connected()
        except ChatError as error:
            if self.registered and not self.welcomed:
                raise type(error)(
                    f"{error}; the new account {sanitize_text(self.account.nickname if self.account else '')} "
                    f"is registered all the same and its token is saved in {self.settings.token_path}"
                ) from error
            raise
        finally:
            if self._producer is not None:
                await cancel_and_wait(self._producer)
                if not self._producer.cancelled():
                    self._producer.exception()  # retrieved; a failure was raised by check_producer already
            if self.witness is not None:
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
        author = f" as {sanitize_text(self.account.nickname)}" if self.account else ""
        text = f"{prefix}posted {plural(outbox.delivered, 'message')}{author}"
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

    def check_producer(self) -> None:
        """Raise what made reading the messages fail, if it did."""
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
        if self._link is not None:
            self._link.transmit()
        self.changed.set()

    async def _keep_connected(self) -> None:
        """Connect as long as there is something to do; back off and retry after losing a connection."""
        delays = self.make_delays()
        failures = 0
        while True:
            self.check_producer()
            if self._messages_ended and not self.outbox.added and self.token is not None:
                return  # the messages ended with nothing to post, so there is nothing to connect for
            if self.welcomed and not self.outbox:
                if self._messages_ended:
                    return
                # Nothing to post: connect again only once there is (an idle server may hang up on us).
                self.changed.clear()
                await self.changed.wait()
                continue
            delivered, doubtful = self.outbox.delivered, self.outbox.doubtful
            try:
                if await self._converse():
                    return
                # Closed while idle: not a failure, so no delay; a connection is made when a post comes.
                logger.debug("the server closed the idle connection")
                continue
            except ChatError as error:
                if not is_retryable(error):
                    raise
                self._last_failure = error
                if self.outbox.delivered > delivered or self.outbox.doubtful > doubtful:
                    # Progress, or a post given up: the next one deserves fresh tries.
                    delays, failures = self.make_delays(), 0
                failures += 1
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
        if self.witness is not None and self.witness.lost:
            await self.witness.start()  # before anything goes out on this connection, as at the start
        dialogue = PostingDialogue(
            self.outbox,
            self.token,
            settings.nickname if self.token is None else None,
            settings.token_source,
            reading_port_hint(settings),
        )
        try:
            async with open_connection(settings.host, settings.port, settings.connect_timeout) as (reader, writer):
                self._link = Link(self, reader, writer, dialogue)
                try:
                    return await self._link.run()
                finally:
                    self._link = None
                    self._salvage_account(dialogue)
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

    def handle(self, event: Event) -> None:
        """Act on what the server said."""
        if isinstance(event, Acknowledged):
            if self.witness is not None:
                self.witness.note_acknowledged(event.post)
            if self.confirm:
                self._confirm(event.post)
            if not self._room.is_set() and self.outbox.roomy:
                self._room.set()
        elif isinstance(event, Registered):
            self._save_account(event.account)
            if event.malformed:
                logger.warning("the registration reply was not in the usual shape, but named the new account's token")
            if self.witness is not None:
                self.witness.core.set_nickname(event.account.nickname)
        elif isinstance(event, LoggedIn):
            first = self.account is None
            self.account = event.account
            if self.witness is not None:
                self.witness.core.set_nickname(event.account.nickname)
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

    def _confirm(self, post: Post) -> None:
        """Tell the person at the terminal that a post is in the chat, in one short line on stderr."""
        text = post.data[: -2 * len(b"\n")].decode(ENCODING, errors="replace")
        print(f"posted: {shorten(sanitize_text(text), CONFIRM_LIMIT)}", file=sys.stderr, flush=True)

    def _salvage_account(self, dialogue: PostingDialogue) -> None:
        """Save a new account whose reply was whole but never ended, as the connection goes for any reason."""
        account = dialogue.salvage_account() if self.token is None else None
        if account is None:
            return
        with suppress(FileError):  # its token is printed; what ended the connection is the error to report
            self._save_account(account)

    def _save_account(self, account: Account) -> None:
        """Save a new account's token at once, before anything else is read; if that fails, show it."""
        self.account = account
        self.token = account.token
        self.secrets.add(account.token)
        nickname = sanitize_text(account.nickname)
        path = self.settings.token_path
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
            print(
                f"The new account {nickname} is registered, but {problem}. "
                f"Its token is {sanitize_text(account.token)} ; put it in {where} (or TOKEN in .env), "
                "or the account is lost.",
                file=sys.stderr,
                flush=True,
            )
            raise FileError(f"{error}; the token of the new account is printed above") from error
        self.registered = True
        logger.info("registered as %s; the token is saved in %s", nickname, path)


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
            try:
                chunk = await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), settings.reply_timeout)
            except asyncio.TimeoutError:
                raise ReplyTimeout(
                    f"no reply from the server in {settings.reply_timeout:g} s while we waited for "
                    f"{dialogue.waiting_for}; try again later or raise --reply-timeout"
                ) from None
            except OSError as error:
                raise ConnectionFailed(f"the connection broke while logging in: {describe_error(error)}") from error
            dialogue.receive_data(chunk)
            while (event := dialogue.next_event()) is not None:
                logger.debug("<< %r", redact(event.line.decode(ENCODING, errors="replace"), {settings.token}))
                if isinstance(event, LoggedIn):
                    return event.account
