"""When the posting server's next reply is due, without any I/O: deadlines, upload time, a wait that stretches."""

from __future__ import annotations

# The slowest uplink a reply deadline allows for, on top of --reply-timeout (a 1 MiB post: 32 s more).
UPLOAD_FLOOR_BYTES_PER_SECOND = 32 * 1024
# Each reply timeout after a post doubles the wait for acknowledgements, up to this: a slow server gets
# the time it needs instead of the same posts again and again. Acknowledgements on time start it over.
ACK_WAIT_FACTOR = 2.0
MAX_ACK_WAIT = 240.0


class ReplyClock:
    """Times the reply the server owes: the wait for acknowledgements lasts the run, each deadline a connection.

    Every method takes `now`, any monotonic clock's reading; `posting` says whether the reply due is an
    acknowledgement, and `shown` how many of our posts awaiting one the chat has shown so far.
    """

    def __init__(self, reply_timeout: float) -> None:
        self.reply_timeout = reply_timeout
        self.ack_wait = reply_timeout  # how long acknowledgements may take, stretched by timeouts
        self.deadline: float | None = None  # when the reply now due must be whole; None: nothing is due
        self.waited = reply_timeout  # the wait the deadline allows, without upload time
        self._started = 0.0  # when the reply now due started to be due
        self._shown_at_start = 0  # posts the chat had shown when the wait began

    def connect(self, now: float, shown: int) -> None:
        """Start a connection: its greeting is due within --reply-timeout."""
        self._start(now, False, shown)

    def sent(self, now: float, size: int, owed: bool, posting: bool, shown: int) -> None:
        """Note size bytes written; owed says whether a reply is due now. Big writes get upload time."""
        if not owed:
            return
        # The server cannot answer what has not reached it: a long post over a slow uplink gets the
        # time it needs at UPLOAD_FLOOR too, or it would time out, be resent and be posted again and again.
        upload = size / UPLOAD_FLOOR_BYTES_PER_SECOND
        if self.deadline is None:
            self._start(now, posting, shown, upload)
        else:
            self.deadline += upload

    def acknowledged(self, now: float) -> None:
        """Note an acknowledgement: one on time makes the wait for the next as long as --reply-timeout again."""
        if now - self._started <= self.reply_timeout:
            self.ack_wait = self.reply_timeout
        self._started = now  # the next acknowledgement is due from now on

    def replied(self, now: float, owed: bool, posting: bool, shown: int) -> None:
        """Note that reply lines arrived; owed says whether another reply is due after them."""
        if owed:
            self._start(now, posting, shown)
        else:
            self.deadline = None

    def remaining(self, now: float) -> float | None:
        """Return the seconds left until the deadline (at most 0 once passed), or None when nothing is due."""
        return None if self.deadline is None else self.deadline - now

    def expire(self, now: float, posting: bool, shown: int) -> float | None:
        """The deadline passed without the reply: None to wait on, or the wait that ran out, to give up.

        An acknowledgement that is late while the chat shows our posts comes from a slow server, not a
        gone one: hanging up would only make us send again what it is still working through.
        """
        if posting and shown > self._shown_at_start:
            self.waited = self.stretch()
            self.deadline = now + self.waited
            self._shown_at_start = shown
            return None
        waited = self.waited
        if posting:
            self.stretch()
        return waited

    def stretch(self) -> float:
        """Double the wait for acknowledgements, up to MAX_ACK_WAIT; return it."""
        self.ack_wait = min(max(self.ack_wait * ACK_WAIT_FACTOR, self.reply_timeout), MAX_ACK_WAIT)
        return self.ack_wait

    def _start(self, now: float, posting: bool, shown: int, extra: float = 0.0) -> None:
        self.waited = self.ack_wait if posting else self.reply_timeout
        self._started = now
        self.deadline = now + self.waited + extra
        self._shown_at_start = shown
