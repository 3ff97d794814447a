"""The reader's receiving side: one connection's bytes stamped into the queue, the idle timeout, the reconnect loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Protocol

from _minechat.history import HistoryFormat
from _minechat.receiver import ReceivingConnection, open_receiver
from _minechat.recorder import WriteQueue
from _minechat.shutdown import cancel_and_wait, first_of
from _minechat.stamping import LineStamper, StampClock, ViewStamper
from _minechat.systemd import ServiceNotifier
from chat_io import (
    DEFAULT_READ_PORT,
    GREETING,
    NEWLINE,
    ConnectionFailed,
    DelayFactory,
    WrongPort,
    describe_error,
    format_address,
    is_retryable,
    plural,
    sanitize_text,
)

logger = logging.getLogger("read_client")


class TailSettings(Protocol):
    """What the tail needs of the reader's settings."""

    host: str
    port: int
    connect_timeout: float
    idle_timeout: float  # 0: never


# After a new connection is made, both streams must be quiet this long (or twice what the connect took, if
# longer) before the quiet one goes: what the server sent it before taking the new one in has come by then.
SWITCH_SETTLE_SECONDS = 0.05
# How long the old connection may lag behind the new one before what only the new one got counts as a loss.
CATCH_UP_SECONDS = 1.0
# How often per idle timeout we look whether anything arrived: silence is noticed within a quarter more.
SILENCE_CHECKS_PER_TIMEOUT = 4


class ConnectionSink:
    """One connection's sink: stamps what arrives into the queue, and spots the posting port's greeting."""

    def __init__(self, tail: ChatTail, standby: bool = False) -> None:
        self._tail = tail
        self._format = tail.history_format
        self._stamper = self._format.make_stamper()
        self._display: LineStamper | None = None  # stdout's text, when it is not the history's
        if tail.make_display is not None:
            self._display = tail.make_display()
        elif self._format.separate_display:
            self._display = LineStamper()
        self._line_path = ""  # the file of the line still open, if one is
        # The first bytes, until we know they are chat (a standby connection goes where the one before went).
        self._head: bytearray | None = None if standby else bytearray()
        self._connection: ReceivingConnection | None = None
        self.heard = False  # something arrived since IdleTimer last looked
        self.held: bytearray | None = bytearray() if standby else None  # a standby's bytes, kept until it takes over
        self.overlap: bytearray | None = None  # while a standby connects and settles: what arrived here meanwhile
        self.last_heard = 0.0  # loop time of the last bytes, while either of the two above is kept
        self.retired = False  # replaced by a standby: what comes now is the new one's to record

    @property
    def delivered_line(self) -> bool:
        """Tell whether at least one whole line came over this connection."""
        return self._stamper.completed

    def connected(self, connection: ReceivingConnection) -> None:
        self._connection = connection
        if self.held is None:
            self._start()

    def _start(self) -> None:
        """Be the connection the chat is recorded from."""
        assert self._connection is not None
        self._tail.connected = True
        self._tail.queue.attach(self._connection.pause)
        self._tail.note(f"connected to {self._tail.address}", "connected", address=self._tail.address)

    def received(self, data: bytes) -> None:
        self.heard = True  # the only cost of the idle timeout per chunk
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("<< %r", data)
        if self.retired:
            return
        if self.held is not None or self.overlap is not None:
            self._keep(data)
            if self.held is not None:
                return
        if self._head is not None:
            data = self._check_head(data)
        if data:
            self._record(data)

    def _keep(self, data: bytes) -> None:
        """During a switch: hold a standby's bytes, or note what the old connection got meanwhile."""
        self.last_heard = asyncio.get_running_loop().time()
        kept = self.held if self.held is not None else self.overlap
        assert kept is not None
        kept += data

    def joins(self, old: ConnectionSink) -> bool:
        """Tell whether all this standby holds is already at the end of what the old connection got meanwhile."""
        assert self.held is not None and old.overlap is not None
        return joined_length(bytes(old.overlap), bytes(self.held)) == len(self.held)

    def take_over(self, old: ConnectionSink) -> bool:
        """Record from now on, from where the old connection's stream ends; tell whether the streams joined.

        Both streams carry the same broadcast in the same order, so what this one holds is joined by
        position: its longest start, in whole lines, that the old one's stream ends with, is skipped.
        """
        assert self.held is not None and old.overlap is not None
        held, self.held = bytes(self.held), None
        skip = joined_length(bytes(old.overlap), held)
        old.overlap, old.retired = None, True
        old.finish()
        joined = skip == len(held)
        if joined:
            logger.debug("went on over a new connection: nothing was lost")
            assert self._connection is not None
            self._tail.queue.attach(self._connection.pause)
        else:  # the old connection missed what this one got: a loss, said as one
            quiet = f"nothing received for {self._tail.settings.idle_timeout:g} s"
            self._tail.note(f"connection lost: {quiet}", "lost", logging.WARNING, error=quiet)
            self._start()
        if held[skip:]:
            self._record(held[skip:])
        return joined

    def _record(self, data: bytes, end: bool = False) -> None:
        """Stamp data (and with end, whatever is held of an unfinished line) into the queue."""
        moment = self._tail.clock.read()
        # A line stays in the file where it began, even if a new day began while it came in.
        line_path = self._line_path if self._stamper.continued else moment.path
        stamp = self._format.stamp(moment)
        text = self._stamper.feed(data, stamp) if data else ""
        shown = self._display.feed(data, moment.stamp) if self._display is not None and data else text
        if end:
            text += self._stamper.flush(stamp)
            if self._display is not None:
                shown += self._display.flush(moment.stamp)
            else:
                shown = text
        ended = True
        if line_path != moment.path:
            line_end = text.find("\n") + 1
            ended = line_end > 0
            head, text = (text[:line_end], text[line_end:]) if ended else (text, "")
            self._tail.queue.add(line_path, head)
        self._tail.queue.add(moment.path, text, shown)
        self._line_path = moment.path if ended else line_path

    def _check_head(self, data: bytes) -> bytes:
        """Hold the first bytes while they could still be the posting port's greeting."""
        assert self._head is not None
        self._head += data
        head = bytes(self._head)
        if len(head) < len(GREETING) and GREETING.startswith(head):
            return b""
        self._head = None
        if head.startswith(GREETING) and self._connection is not None:
            self._connection.fail(
                WrongPort(
                    f"{self._tail.address} is minechat's posting port, not the chat stream; "
                    f"read the chat from port {DEFAULT_READ_PORT} (--port or READ_PORT)"
                )
            )
            return b""
        return head

    def finish(self) -> None:
        """Put what is held of an unfinished line into the queue, ended."""
        held = bytes(self._head) if self._head else b""
        self._head = None
        self._record(held, end=True)
        if isinstance(self._display, ViewStamper) and self._display.hidden:
            logger.debug("%s of ignored nicknames not shown from this connection", plural(self._display.hidden, "line"))


class IdleTimer:
    """Tells when nothing arrived over a connection for the idle timeout; looks a few times per timeout."""

    def __init__(self, sink: ConnectionSink, timeout: float, paused: Callable[[], bool]) -> None:
        self._sink = sink
        self._timeout = timeout
        self._paused = paused
        self._interval = timeout / SILENCE_CHECKS_PER_TIMEOUT
        self._loop = asyncio.get_running_loop()
        self._quiet_since = self._loop.time()
        self.quiet = asyncio.Event()
        self._handle = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self._sink.heard or self._paused():
            # While we hold the socket paused, the server's silence is ours.
            self._sink.heard = False
            self._quiet_since = now
        elif now - self._quiet_since >= self._timeout:
            self.quiet.set()
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def cancel(self) -> None:
        """Stop looking."""
        self._handle.cancel()


class ChatTail:
    """Receives the chat into the queue, reconnecting forever."""

    def __init__(
        self,
        settings: TailSettings,
        queue: WriteQueue,
        make_delays: DelayFactory,
        service: ServiceNotifier,
        clock: StampClock,
        history_format: HistoryFormat,
        make_display: Callable[[], LineStamper] | None = None,
    ) -> None:
        self.settings = settings
        self.make_display = make_display  # stdout's own stamper for each connection (a view), if any
        self.queue = queue
        self.make_delays = make_delays
        self.address = format_address(settings.host, settings.port)
        self.connected = False
        self.service = service
        self.history_format = history_format
        self.clock = clock
        self.sink: ConnectionSink | None = None  # the connection recorded from now
        self.start_over = False  # the next wait starts over: a connection was accepted, then only quiet

    def note(self, text: str, event: str, level: int = logging.INFO, **details: object) -> None:
        """Report a connection event on stderr and in the history file."""
        text = sanitize_text(text)
        logger.log(level, "%s", text)
        moment = self.clock.read()
        self.queue.add(moment.path, self.history_format.note(moment, text, event, details))
        self.service.status(text)

    async def receive(self) -> None:
        """Hold connections until one ends, a quiet one replaced by a new one first; all that came is queued."""
        self.connected = False
        self.note(f"connecting to {self.address}", "connecting", address=self.address)
        sink = self.sink = ConnectionSink(self)
        stack = AsyncExitStack()
        try:
            connection = await stack.enter_async_context(self._open(sink))
            while await self._wait_quiet(sink, connection):
                self.start_over = True  # accepted, then only quiet: a quiet chat is no failure
                new_stack, new_sink, connection = await self._switch(sink, connection)
                await stack.aclose()  # the old connection goes once the new one has taken over
                stack, sink = new_stack, new_sink
                self.sink = sink
        finally:
            await stack.aclose()
            self.queue.attach(None)
            sink.finish()

    def _open(self, sink: ConnectionSink) -> AbstractAsyncContextManager[ReceivingConnection]:
        return open_receiver(self.settings.host, self.settings.port, sink, self.settings.connect_timeout)

    async def _wait_quiet(self, sink: ConnectionSink, connection: ReceivingConnection) -> bool:
        """Return True once nothing arrived for the idle timeout, False when the connection ended; raise its error."""
        if not self.settings.idle_timeout:
            await connection.wait_ended()
            return False
        timer = IdleTimer(sink, self.settings.idle_timeout, lambda: self.queue.paused)
        ending = asyncio.ensure_future(connection.wait_ended())
        try:
            await first_of(ending, timer.quiet.wait())
        finally:
            timer.cancel()
            failure = await cancel_and_wait(ending)
        if ending.cancelled():
            return True  # quiet for the idle timeout, still open
        if failure is not None:
            raise failure
        return False

    async def _switch(
        self, old: ConnectionSink, old_connection: ReceivingConnection
    ) -> tuple[AsyncExitStack, ConnectionSink, ReceivingConnection]:
        """Make a new connection while the quiet one stays; once both settle, the new one takes over from it.

        Raise ConnectionFailed if no new connection can be had: the quiet one is given up as before.
        """
        logger.debug("nothing received for %g s: connecting again before letting go", self.settings.idle_timeout)
        new = ConnectionSink(self, standby=True)
        old.overlap = bytearray()
        stack = AsyncExitStack()
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            connection = await stack.enter_async_context(self._open(new))
            settle = max(SWITCH_SETTLE_SECONDS, 2 * (loop.time() - started))
            await self._settle(old, new, old_connection, connection, settle)
        except BaseException as error:
            old.overlap = None
            await stack.aclose()
            if isinstance(error, Exception) and is_retryable(error):
                quiet = f"nothing received for {self.settings.idle_timeout:g} s"
                raise ConnectionFailed(f"{quiet}, and no new connection: {describe_error(error)}") from error
            raise
        new.take_over(old)
        return stack, new, connection

    async def _settle(
        self,
        old: ConnectionSink,
        new: ConnectionSink,
        old_connection: ReceivingConnection,
        new_connection: ReceivingConnection,
        settle: float,
    ) -> None:
        """Wait until both streams were quiet for settle seconds with the old one caught up with the new, or the old
        one ended; raise if the new one ends. A busy switch, or an old connection that never catches up, is joined
        all the same after a while."""
        loop = asyncio.get_running_loop()
        connected_at = loop.time()
        deadline = connected_at + max(self.settings.idle_timeout, 4 * settle)
        catch_up = connected_at + max(CATCH_UP_SECONDS, 4 * settle)  # a slow old connection is not a dead one
        old_end = asyncio.ensure_future(old_connection.wait_ended())
        new_end = asyncio.ensure_future(new_connection.wait_ended())
        try:
            while not old_end.done():  # once the old one is done, all it got is here
                now = loop.time()
                quiet_for = now - max(old.last_heard, new.last_heard, connected_at)
                caught_up = now >= catch_up or new.joins(old)
                wait = min(settle - quiet_for if caught_up else settle, deadline - now)
                if wait <= 0 or (quiet_for >= settle and caught_up):
                    return
                await asyncio.wait({old_end, new_end}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if new_end.done() and not old_end.done():
                    new_end.result()  # raises what ended it
                    raise ConnectionFailed("the server closed the new connection at once")
        finally:
            for end in (old_end, new_end):
                await cancel_and_wait(end)  # retrieved: the old one's end is its replacement's business now

    async def run(self) -> None:
        """Receive forever; back off between tries, starting over after a connection that delivered or stayed quiet."""
        delays = self.make_delays()
        while True:
            self.start_over = False
            try:
                await self.receive()
                error: BaseException = ConnectionFailed("the server closed the connection")
            except Exception as caught:  # sorted by is_retryable below
                if not is_retryable(caught):
                    raise
                error = caught
            if self.start_over or (self.sink is not None and self.sink.delivered_line):
                delays = self.make_delays()
            delay = next(delays)
            reason = sanitize_text(describe_error(error))
            what, event = (f"connection lost: {reason}", "lost") if self.connected else (reason, "retrying")
            self.note(
                f"{what}; next try in {delay:.1f} s", event, logging.WARNING, error=reason, retry_in=round(delay, 1)
            )
            await asyncio.sleep(delay)


def joined_length(old: bytes, new: bytes) -> int:
    """Return how much of new's start, in whole lines, old's end is (0 if none): where new goes on from old."""
    ends = [index + 1 for index, byte in enumerate(new) if byte == NEWLINE_BYTE]
    for end in reversed(ends):
        if old.endswith(new[:end]) and (len(old) == end or old[-end - 1] == NEWLINE_BYTE):
            return end
    return 0


NEWLINE_BYTE = NEWLINE[0]
