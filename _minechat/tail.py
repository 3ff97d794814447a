"""The reader's receiving side: one connection's bytes stamped into the queue, the idle timeout, the reconnect loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from _minechat.history import HistoryFormat
from _minechat.recorder import WriteQueue
from _minechat.stamping import LineStamper, StampClock
from _minechat.systemd import ServiceNotifier
from chat_io import (
    DEFAULT_READ_PORT,
    GREETING,
    ConnectionFailed,
    DelayFactory,
    ReceivingConnection,
    WrongPort,
    describe_error,
    format_address,
    is_retryable,
    open_receiver,
    sanitize_text,
)

logger = logging.getLogger("read_client")


class TailSettings(Protocol):
    """What the tail needs of the reader's settings."""

    host: str
    port: int
    connect_timeout: float
    idle_timeout: float  # 0: never


# How often per idle timeout we look whether anything arrived: silence is noticed within a quarter more.
SILENCE_CHECKS_PER_TIMEOUT = 4


class ConnectionSink:
    """One connection's sink: stamps what arrives into the queue, and spots the posting port's greeting."""

    def __init__(self, tail: ChatTail) -> None:
        self._tail = tail
        self._format = tail.history_format
        self._stamper = self._format.make_stamper()
        self._display = LineStamper() if self._format.separate_display else None  # stdout's text
        self._line_path = ""  # the file of the line still open, if one is
        self._head: bytearray | None = bytearray()  # the first bytes, until we know they are chat
        self._connection: ReceivingConnection | None = None
        self.heard = False  # something arrived since IdleTimer last looked

    @property
    def delivered_line(self) -> bool:
        """Tell whether at least one whole line came over this connection."""
        return self._stamper.completed

    def connected(self, connection: ReceivingConnection) -> None:
        self._connection = connection
        self._tail.connected = True
        self._tail.queue.attach(connection.pause)
        self._tail.note(f"connected to {self._tail.address}", "connected", address=self._tail.address)

    def received(self, data: bytes) -> None:
        self.heard = True  # the only cost of the idle timeout per chunk
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("<< %r", data)
        if self._head is not None:
            data = self._check_head(data)
        if data:
            self._record(data)

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


class IdleTimer:
    """Ends a connection over which nothing arrived for the idle timeout; looks a few times per timeout."""

    def __init__(
        self, sink: ConnectionSink, connection: ReceivingConnection, timeout: float, paused: Callable[[], bool]
    ) -> None:
        self._sink = sink
        self._connection = connection
        self._timeout = timeout
        self._paused = paused
        self._interval = timeout / SILENCE_CHECKS_PER_TIMEOUT
        self._loop = asyncio.get_running_loop()
        self._quiet_since = self._loop.time()
        self._handle = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self._sink.heard or self._paused():
            # While we hold the socket paused, the server's silence is ours.
            self._sink.heard = False
            self._quiet_since = now
        elif now - self._quiet_since >= self._timeout:
            self._connection.fail(ConnectionFailed(f"nothing received for {self._timeout:g} s"))
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
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.make_delays = make_delays
        self.address = format_address(settings.host, settings.port)
        self.connected = False
        self.service = service
        self.history_format = history_format
        self.clock = clock

    def note(self, text: str, event: str, level: int = logging.INFO, **details: object) -> None:
        """Report a connection event on stderr and in the history file."""
        text = sanitize_text(text)
        logger.log(level, "%s", text)
        moment = self.clock.read()
        self.queue.add(moment.path, self.history_format.note(moment, text, event, details))
        self.service.status(text)

    async def receive(self, sink: ConnectionSink) -> None:
        """Hold one connection until it ends; whatever ends it, what arrived is in the queue."""
        self.connected = False
        self.note(f"connecting to {self.address}", "connecting", address=self.address)
        try:
            async with open_receiver(self.settings.host, self.settings.port, sink, self.settings.connect_timeout) as (
                connection
            ):
                silence = self._start_idle_timer(sink, connection)
                try:
                    await connection.wait_ended()
                finally:
                    if silence is not None:
                        silence.cancel()
        finally:
            self.queue.attach(None)
            sink.finish()

    def _start_idle_timer(self, sink: ConnectionSink, connection: ReceivingConnection) -> IdleTimer | None:
        """Start the idle timeout on a connection, unless it is off."""
        if not self.settings.idle_timeout:
            return None
        return IdleTimer(sink, connection, self.settings.idle_timeout, lambda: self.queue.paused)

    async def run(self) -> None:
        """Receive forever; back off between tries, starting over after a connection that delivered a line."""
        delays = self.make_delays()
        while True:
            sink = ConnectionSink(self)
            try:
                await self.receive(sink)
                error: BaseException = ConnectionFailed("the server closed the connection")
            except Exception as caught:  # sorted by is_retryable below
                if not is_retryable(caught):
                    raise
                error = caught
            if sink.delivered_line:
                delays = self.make_delays()
            delay = next(delays)
            reason = sanitize_text(describe_error(error))
            what, event = (f"connection lost: {reason}", "lost") if self.connected else (reason, "retrying")
            self.note(
                f"{what}; next try in {delay:.1f} s", event, logging.WARNING, error=reason, retry_in=round(delay, 1)
            )
            await asyncio.sleep(delay)
