"""Tail the minechat chat forever: print every line and append it, stamped, to a history file."""

from __future__ import annotations

import signal
import sys

STOP_SIGNAL_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
SIGNAL_EXIT_BASE = 128  # as chat_io's EXIT_SIGNAL_BASE, which is not imported yet here


def stop_during_start_up(signum: int, frame: object) -> None:
    """End the process with the signal's exit code: no traceback, wherever in the imports it lands."""
    raise SystemExit(SIGNAL_EXIT_BASE + signum)


def catch_stops_during_start_up() -> None:
    """Until the event loop takes over, a stop ends the process cleanly; a signal ignored at start stays ignored."""
    for name in STOP_SIGNAL_NAMES:
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stop_during_start_up)


# First of all, before the imports that take most of the start-up.
if __name__ == "__main__":
    catch_stops_during_start_up()

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import configargparse

from _minechat.history import (
    HISTORY_FORMATS,
    JSONL_FORMAT,
    TEXT_FORMAT,
    DiskFull,
    HistoryFile,
    HistoryFormat,
    HistoryPattern,
    format_status,
)
from _minechat.output import BackgroundWriter, DaemonExecutor, RawTextOutput, plural
from _minechat.settings import (
    backlog_count,
    context_count,
    full_pattern,
    log_path_value,
    make_parser,
    moment_value,
    non_negative_seconds,
    parse_arguments,
    search_pattern,
    text_value,
    time_format_value,
)
from _minechat.shutdown import SignalCatcher, cancel_and_wait, run_cli, run_until_signal
from _minechat.stamping import DEFAULT_TIME_FORMAT, LineStamper, Moment, StampClock
from _minechat.systemd import ServiceNotifier
from chat_io import (
    DEFAULT_READ_PORT,
    GREETING,
    ConnectionFailed,
    DelayFactory,
    ReceivingConnection,
    WrongPort,
    backoff,
    describe_error,
    format_address,
    is_retryable,
    open_receiver,
    sanitize_text,
)

logger = logging.getLogger("read_client")

DEFAULT_LOG_PATH = "chat_logs.txt"
DEFAULT_BACKLOG = 10
# The public chat's bots post every few seconds: a minute of silence means a dead connection.
DEFAULT_IDLE_TIMEOUT = 60
# How often per idle timeout we look whether anything arrived: silence is noticed within a quarter more.
SILENCE_CHECKS_PER_TIMEOUT = 4


@dataclass(frozen=True)
class ReaderSettings:
    """Everything read_client needs, parsed once."""

    host: str
    port: int
    log_path: Path  # may hold strftime fields, and %% for a literal %
    connect_timeout: float
    verbose: bool
    time_format: str = DEFAULT_TIME_FORMAT
    history_format: str = TEXT_FORMAT
    backlog: int = DEFAULT_BACKLOG
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # 0: never
    search: str | None = None  # a pattern: answer --search from the history instead of tailing
    nick: str | None = None
    since: datetime | None = None  # local time, the first moment asked about
    until: datetime | None = None  # local time, the first moment past the range
    context: int = 0
    coverage: bool = False


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ReaderSettings:
    """Build settings from the command line over the environment over .env over defaults."""
    parser = build_parser()
    args = parse_arguments(parser, argv, environ, cwd)
    check_archive_options(parser, args)
    return ReaderSettings(
        host=args.host,
        port=args.port,
        log_path=full_pattern(args.log_path, cwd),
        connect_timeout=args.connect_timeout,
        verbose=args.verbose,
        time_format=args.time_format,
        history_format=args.history_format,
        backlog=args.backlog,
        idle_timeout=args.idle_timeout,
        search=args.search,
        nick=args.nick,
        since=args.since.start if args.since else None,
        until=args.until.start + args.until.length if args.until else None,
        context=args.context,
        coverage=args.coverage,
    )


def build_parser() -> configargparse.ArgumentParser:
    """Return read_client's command-line parser."""
    parser = make_parser(
        "Tail the minechat chat: print every line and append it, stamped, to a history file.",
        port_env="READ_PORT",
        port_default=DEFAULT_READ_PORT,
        port_help="port that streams the chat",
        verbose_help="log at debug level",
    )
    parser.add_argument(
        "--log_path",
        "--log-path",
        dest="log_path",
        env_var="LOG_PATH",
        default=DEFAULT_LOG_PATH,
        type=log_path_value,
        help="history file, appended to and never truncated; date fields start a new file each day",
    )
    parser.add_argument(
        "--time-format",
        "--time_format",
        dest="time_format",
        env_var="TIME_FORMAT",
        default=DEFAULT_TIME_FORMAT,
        type=time_format_value,
        help="strftime format of the time stamp of each line, in the text history and on stdout",
    )
    parser.add_argument(
        "--format",
        dest="history_format",
        env_var="FORMAT",
        default=TEXT_FORMAT,
        choices=(TEXT_FORMAT, JSONL_FORMAT),
        help="history file format: text lines, or jsonl (one JSON object per line); stdout is text",
    )
    parser.add_argument(
        "--backlog",
        env_var="BACKLOG",
        default=DEFAULT_BACKLOG,
        type=backlog_count,
        help="how many chat lines of the history to show at start, before live chat; 0 shows none",
    )
    parser.add_argument(
        "--idle-timeout",
        "--idle_timeout",
        dest="idle_timeout",
        env_var="IDLE_TIMEOUT",
        default=DEFAULT_IDLE_TIMEOUT,
        type=non_negative_seconds,
        help="seconds without a byte from the server after which the connection counts as lost; 0 never",
    )
    add_archive_options(parser)
    return parser


def add_archive_options(parser: configargparse.ArgumentParser) -> None:
    """Add the options that ask the history instead of tailing the chat."""
    archive = parser.add_argument_group("asking the history (connects to nothing, takes no lock)")
    archive.add_argument(
        "--search",
        type=search_pattern,
        metavar="PATTERN",
        help="print the chat lines of the history that match a regular expression (case-insensitive unless "
        "it has an upper-case letter), oldest first, and exit",
    )
    archive.add_argument("--nick", type=text_value, metavar="NICK", help="with --search: only lines of this nickname")
    archive.add_argument(
        "--since",
        type=moment_value,
        metavar="WHEN",
        help="with --search or --coverage: from YYYY-MM-DD or YYYY-MM-DD HH:MM on",
    )
    archive.add_argument(
        "--until",
        type=moment_value,
        metavar="WHEN",
        help="with --search or --coverage: up to YYYY-MM-DD or YYYY-MM-DD HH:MM, included",
    )
    archive.add_argument(
        "--context",
        type=context_count,
        default=0,
        metavar="N",
        help="with --search: lines to print before and after each match",
    )
    archive.add_argument(
        "--coverage",
        action="store_true",
        help="print when the reader was connected and each gap with its reason, then the totals, and exit",
    )


def check_archive_options(parser: configargparse.ArgumentParser, args: configargparse.Namespace) -> None:
    """Refuse archive options that cannot work together or with this --log_path."""
    if args.search is not None and args.coverage:
        parser.error("--search and --coverage ask one thing each; give one of them")
    for option, given in (("--nick", args.nick is not None), ("--context", args.context)):
        if given and args.search is None:
            parser.error(f"{option} goes with --search")
    if (args.since or args.until) and args.search is None and not args.coverage:
        parser.error("--since and --until go with --search or --coverage")
    if args.since and args.until and args.since.start >= args.until.start + args.until.length:
        parser.error("--since is after --until: nothing lies between them")


# What the journal may hold before we stop reading the socket until the writer has taken it.
JOURNAL_HIGH_CHARS = 64 * 1024
# How long a stop waits for the history to take what is queued: a hung disk must not keep us running.
HISTORY_CLOSE_SECONDS = 1.0
# How often the writer tries again while the disk is full.
DISK_RETRY_SECONDS = 1.0
NO_ROOM_NOTE = "the disk is full"


class Echo:
    """Prints received chat from a thread: the history never waits for stdout, and stdout memory is bounded."""

    def __init__(self, out: TextIO, history_path: Callable[[], Path], clock: StampClock) -> None:
        def write(text: str) -> None:
            out.write(text)
            out.flush()

        def skip_note(count: int) -> str:
            what = f"{plural(count, 'line')} not shown here (stdout was too slow)"
            return format_status(clock.fresh(), f"{what}; they are in {history_path()}")

        def on_failure(error: BaseException) -> None:
            logger.warning("cannot print chat any more (%s); still writing the history file", describe_error(error))

        self._writer = BackgroundWriter(write, skip_note, name="stdout", on_failure=on_failure)

    def show(self, text: str) -> None:
        """Queue text for stdout; never waits."""
        self._writer.put(text)

    def close(self) -> None:
        """Print what is queued if stdout takes it within a second, then stop."""
        self._writer.close()


class Journal:
    """Text received but not yet on disk, in order, each with its file; asks to pause while it holds too much."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, list[str]]] = []  # (history file, its texts), in order
        self._shown: list[str] = []  # what goes to stdout: chat, not notes
        self._size = 0
        self._ready = asyncio.Event()
        self._paused = False
        self._stalled = False  # the writer cannot write: stop reading whatever the size
        self.pause: Callable[[bool], None] | None = None  # the current connection's

    def add(self, path: str, text: str, shown: str = "") -> None:
        """Queue text for the history file at path, and shown for stdout."""
        if text:
            if self._entries and self._entries[-1][0] == path:
                self._entries[-1][1].append(text)
            else:
                self._entries.append((path, [text]))
            self._size += len(text)
        if shown:
            self._shown.append(shown)
            if shown is not text:
                self._size += len(shown)
        if not (text or shown):
            return
        self._ready.set()
        if self._size > JOURNAL_HIGH_CHARS and not self._paused:
            self._set_paused(True)

    def take(self) -> tuple[list[tuple[str, str]], str]:
        """Return everything queued, as (history file, text) entries and text for stdout, and forget it."""
        entries = [(path, "".join(texts)) for path, texts in self._entries]
        shown = "".join(self._shown)
        self._entries.clear()
        self._shown.clear()
        self._size = 0
        self._ready.clear()
        if self._paused and not self._stalled:
            self._set_paused(False)
        return entries, shown

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self.pause is not None:
            self.pause(paused)

    def attach(self, pause: Callable[[bool], None] | None) -> None:
        """Take a new connection's pause (None: no connection); it starts paused if we are."""
        self.pause = pause
        if pause is not None and self._paused:
            pause(True)

    def stall(self, stalled: bool) -> None:
        """Stop reading the socket while the writer cannot write (a full disk), or go on once it can."""
        self._stalled = stalled
        if stalled != self._paused:
            self._set_paused(stalled)

    @property
    def paused(self) -> bool:
        """Tell whether we asked the connection to stop reading (so its silence is ours)."""
        return self._paused

    @property
    def empty(self) -> bool:
        """Tell whether nothing is queued."""
        return not self._entries and not self._shown

    async def wait(self) -> None:
        """Return once there is something to take."""
        await self._ready.wait()

    def wake(self) -> None:
        """Wake a waiting writer even with nothing queued."""
        self._ready.set()


class Recorder:
    """Writes the journal to the history file, then to stdout; nothing taken from the journal is dropped.

    A full disk is a pause: the socket is not read, the rest is tried every second, and once it is
    written the history gets a note of how long the disk was full.
    """

    def __init__(
        self,
        history: HistoryFile,
        echo: Echo,
        clock: StampClock,
        service: ServiceNotifier,
        history_format: HistoryFormat,
    ) -> None:
        self.journal = Journal()
        self._history = history
        self._echo = echo
        self._clock = clock
        self._service = service
        self._format = history_format
        self._closing = False
        self._given_up = False  # stopped on a full disk: what comes now is shown, not written
        self._woken = asyncio.Event()  # closing: stop waiting for room
        import aiofiles.os  # here, not at the top: it costs a --help more than all our own modules

        self._executor = DaemonExecutor("history")
        self._write_in_thread = aiofiles.os.wrap(history.write)  # one thread hop per batch
        self._writing = False  # a write is in the worker's hands
        self._writes_done = 0  # writes that returned, written or not
        self._writes_seen = 0  # _writes_done when progressing() last looked
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._write_forever())

    async def _write_forever(self) -> None:
        while True:
            await self.journal.wait()
            entries, shown = self.journal.take()
            if entries and not self._given_up:
                await self._write_through_full_disk(entries)
            if shown:
                self._echo.show(shown)
            if self._closing and self.journal.empty:
                return

    async def _write_through_full_disk(self, entries: list[tuple[str, str]]) -> None:
        """Write entries; while the disk is full, hold the socket and try again every second."""
        full_since = None
        while True:
            try:
                await self._write(entries)
            except DiskFull as full:
                entries = full.unwritten
            else:
                break
            if full_since is None:
                full_since = self._clock.fresh()
                self._report_full()
            if self._closing:
                self._give_up()
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._woken.wait(), DISK_RETRY_SECONDS)
        if full_since is not None:
            self._report_room(full_since)

    async def _write(self, entries: list[tuple[str, str]]) -> None:
        self._writing = True
        try:
            await self._write_in_thread(entries, executor=self._executor)
        finally:
            self._writing = False
            self._writes_done += 1

    def progressing(self) -> bool:
        """Tell whether the writer has nothing in hand or finished a write since the last look (for the watchdog)."""
        done, self._writes_seen = self._writes_done != self._writes_seen, self._writes_done
        return done or not self._writing

    def _report_full(self) -> None:
        text = f"{NO_ROOM_NOTE} for {self._history.path}: holding the chat, trying again every second"
        logger.warning("%s", text)
        self._service.status(text)
        self.journal.stall(True)

    def _report_room(self, full_since: Moment) -> None:
        self.journal.stall(False)
        until = self._clock.fresh()
        text = f"disk was full from {full_since.iso} to {until.iso}; nothing received was lost"
        logger.info("%s", text)
        self._service.status(text)
        details = {"since": full_since.iso, "until": until.iso}
        self.journal.add(until.path, self._format.note(until, text, "disk_full", details))

    def _give_up(self) -> None:
        """Stopping on a full disk: what could not be written is still shown on stdout; say so."""
        self._given_up = True
        logger.error("stopping while the disk is full: the last chat received is not written to %s", self._history.path)

    async def close(self) -> None:
        """Write out everything queued, then stop; raise what the writing raised. A hung disk gets a second."""
        self._closing = True
        self._woken.set()
        self.journal.wake()
        try:
            done, _ = await asyncio.wait({self.task}, timeout=HISTORY_CLOSE_SECONDS)
            if not done:
                logger.error(
                    "the history file %s takes no writes (a hung disk?); stopping without the last chat",
                    self._history.path,
                )
                await cancel_and_wait(self.task)
                return
            await self.task
        finally:
            self._executor.shutdown(wait=False)


class ConnectionLog:
    """One connection's sink: stamps what arrives into the journal, and spots the posting port's greeting."""

    def __init__(self, tail: ChatTail) -> None:
        self._tail = tail
        self._format = tail.history_format
        self._stamper = self._format.make_stamper()
        self._display = LineStamper() if self._format.separate_display else None  # stdout's text
        self._line_path = ""  # the file of the line still open, if one is
        self._head: bytearray | None = bytearray()  # the first bytes, until we know they are chat
        self._connection: ReceivingConnection | None = None
        self.heard = False  # something arrived since SilenceWatch last looked

    @property
    def delivered_line(self) -> bool:
        """Tell whether at least one whole line came over this connection."""
        return self._stamper.completed

    def connected(self, connection: ReceivingConnection) -> None:
        self._connection = connection
        self._tail.connected = True
        self._tail.journal.attach(connection.pause)
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
        """Stamp data (and with end, whatever is held of an unfinished line) into the journal."""
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
            self._tail.journal.add(line_path, head)
        self._tail.journal.add(moment.path, text, shown)
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
        """Put what is held of an unfinished line into the journal, ended."""
        held = bytes(self._head) if self._head else b""
        self._head = None
        self._record(held, end=True)


class SilenceWatch:
    """Ends a connection over which nothing arrived for the idle timeout; looks a few times per timeout."""

    def __init__(
        self, log: ConnectionLog, connection: ReceivingConnection, timeout: float, paused: Callable[[], bool]
    ) -> None:
        self._log = log
        self._connection = connection
        self._timeout = timeout
        self._paused = paused
        self._interval = timeout / SILENCE_CHECKS_PER_TIMEOUT
        self._loop = asyncio.get_running_loop()
        self._quiet_since = self._loop.time()
        self._handle = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self._log.heard or self._paused():
            # While we hold the socket paused, the server's silence is ours.
            self._log.heard = False
            self._quiet_since = now
        elif now - self._quiet_since >= self._timeout:
            self._connection.fail(ConnectionFailed(f"nothing received for {self._timeout:g} s"))
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def cancel(self) -> None:
        """Stop looking."""
        self._handle.cancel()


class ChatTail:
    """Receives the chat into the journal, reconnecting forever."""

    def __init__(
        self,
        settings: ReaderSettings,
        journal: Journal,
        make_delays: DelayFactory,
        service: ServiceNotifier | None = None,
        clock: StampClock | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.make_delays = make_delays
        self.address = format_address(settings.host, settings.port)
        self.connected = False
        self.service = service or ServiceNotifier({})  # an empty environment: one that never sends
        self.history_format = HISTORY_FORMATS[settings.history_format]
        self.clock = clock or StampClock(settings.time_format, HistoryPattern(settings.log_path).expand)

    def note(self, text: str, event: str, level: int = logging.INFO, **details: object) -> None:
        """Report a connection event on stderr and in the history file."""
        text = sanitize_text(text)
        logger.log(level, "%s", text)
        moment = self.clock.read()
        self.journal.add(moment.path, self.history_format.note(moment, text, event, details))
        self.service.status(text)

    async def receive(self, log: ConnectionLog) -> None:
        """Hold one connection until it ends; whatever ends it, what arrived is in the journal."""
        self.connected = False
        self.note(f"connecting to {self.address}", "connecting", address=self.address)
        try:
            async with open_receiver(self.settings.host, self.settings.port, log, self.settings.connect_timeout) as (
                connection
            ):
                silence = self._watch_silence(log, connection)
                try:
                    await connection.wait_ended()
                finally:
                    if silence is not None:
                        silence.cancel()
        finally:
            self.journal.attach(None)
            log.finish()

    def _watch_silence(self, log: ConnectionLog, connection: ReceivingConnection) -> SilenceWatch | None:
        """Start the idle timeout on a connection, unless it is off."""
        if not self.settings.idle_timeout:
            return None
        return SilenceWatch(log, connection, self.settings.idle_timeout, lambda: self.journal.paused)

    async def run(self) -> None:
        """Receive forever; back off between tries, starting over after a connection that delivered a line."""
        delays = self.make_delays()
        while True:
            log = ConnectionLog(self)
            try:
                await self.receive(log)
                error: BaseException = ConnectionFailed("the server closed the connection")
            except Exception as caught:  # sorted by is_retryable below
                if not is_retryable(caught):
                    raise
                error = caught
            if log.delivered_line:
                delays = self.make_delays()
            delay = next(delays)
            reason = sanitize_text(describe_error(error))
            what, event = (f"connection lost: {reason}", "lost") if self.connected else (reason, "retrying")
            self.note(
                f"{what}; next try in {delay:.1f} s", event, logging.WARNING, error=reason, retry_in=round(delay, 1)
            )
            await asyncio.sleep(delay)


async def watch(work: Coroutine[object, object, None], writer: asyncio.Task[None]) -> None:
    """Run work until it ends, or until the writer fails; raise what either raised."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(task)
    if writer.done():
        writer.result()
    task.result()


def answer_query(settings: ReaderSettings, out: TextIO) -> int:
    """Answer --search or --coverage from the history's files, oldest first, on stdout; connect to nothing."""
    from _minechat import archive  # here: only the query modes read the whole history

    try:
        return archive.answer(settings, HistoryPattern(settings.log_path), out.write)
    except BrokenPipeError:  # stdout went away (| head): done, as grep is
        return SIGNAL_EXIT_BASE + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


async def run(
    settings: ReaderSettings, out: TextIO, make_delays: DelayFactory = backoff, now: Callable[[], float] = time.time
) -> int:
    """Tail the chat until a signal, or answer a question about the history; return the exit code."""
    if settings.search is not None or settings.coverage:
        return answer_query(settings, out)
    with SignalCatcher() as signals, ServiceNotifier() as service:
        pattern = HistoryPattern(settings.log_path)
        history_format = HISTORY_FORMATS[settings.history_format]
        clock = StampClock(settings.time_format, pattern.expand, now)

        history = HistoryFile(pattern, history_format, clock)
        await asyncio.to_thread(history.open, clock.read().path)
        echo = Echo(out, lambda: history.path, clock)
        try:
            if settings.backlog:
                from _minechat.backlog import show_backlog  # here: only a run with a backlog reads one

                backlog = show_backlog(history, settings.backlog, settings.time_format, echo.show, clock)
                if await run_until_signal(backlog, signals) is not None:
                    return signals.exit_code  # Ctrl-C while a long history is read back
            recorder = Recorder(history, echo, clock, service, history_format)
            tail = ChatTail(settings, recorder.journal, make_delays, service, clock)
            try:
                async with service.watchdog(recorder.progressing):
                    service.ready()  # the history file is open and locked: we are working
                    signum = await run_until_signal(watch(tail.run(), recorder.task), signals)
                service.stopping()
                name = signal.Signals(signum or signal.SIGINT).name
                tail.note(f"stopped by {name}", "stopped", signal=name)
            finally:
                # Whatever stopped us, every line received goes to disk before we exit.
                await recorder.close()
            return signals.exit_code
        finally:
            echo.close()
            history.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run read_client from the command line; return the exit code."""
    return run_cli(lambda: parse_settings(argv), lambda settings: run(settings, RawTextOutput(sys.stdout)), logger)


if __name__ == "__main__":
    sys.exit(main())
