"""Tail the minechat chat forever: print every line and append it, stamped, to a history file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import aiofiles.os
import configargparse

from chat_io import (
    DEFAULT_READ_PORT,
    ENCODING,
    EXIT_INTERRUPTED,
    GREETING,
    NEWLINE,
    AlreadyRunning,
    BackgroundWriter,
    ChatError,
    ConnectionFailed,
    FileError,
    LineStamper,
    RawTextOutput,
    ReceivingConnection,
    ServiceNotifier,
    SignalCatcher,
    WrongPort,
    backoff,
    cancel_and_wait,
    configure_logging,
    describe_error,
    exit_code_for,
    flush_logging,
    format_address,
    format_stamp,
    format_status_line,
    full_path,
    is_retryable,
    make_output_safe,
    make_parser,
    open_receiver,
    parse_arguments,
    run_until_signal,
    sanitize_text,
)

logger = logging.getLogger("read_client")

DEFAULT_LOG_PATH = "chat_logs.txt"
OWNER_ONLY = 0o600

DelayFactory = Callable[[], Iterator[float]]


@dataclass(frozen=True)
class ReaderSettings:
    """Everything read_client needs, parsed once."""

    host: str
    port: int
    log_path: Path
    connect_timeout: float
    verbose: bool


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ReaderSettings:
    """Build settings from the command line over the environment over .env over defaults."""
    parser = build_parser()
    args = parse_arguments(parser, argv, environ, cwd)
    return ReaderSettings(
        host=args.host,
        port=args.port,
        log_path=full_path(args.log_path, cwd),
        connect_timeout=args.connect_timeout,
        verbose=args.verbose,
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
        help="history file, appended to and never truncated",
    )
    return parser


OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
# Opening a FIFO for writing would wait for a reader forever; non-blocking, it fails or opens at once.
PROBE_FLAGS = getattr(os, "O_NONBLOCK", 0)
# Hidden and specific, so it cannot be another tool's file (`--log_path poetry` must not touch poetry.lock).
LOCK_SUFFIX = ".read_client.lock"
# What a long line cut by a rotation says where it goes on in the new file.
CONTINUED = "(continued) "
# Windows locks are mandatory: lock a byte far past the PID we write, so others can still read it.
WINDOWS_LOCK_OFFSET = 1 << 30
# What the journal may hold before we stop reading the socket until the writer has taken it.
JOURNAL_HIGH_CHARS = 64 * 1024


def identify_file(stat_result: os.stat_result) -> tuple[int, int]:
    """Return what tells one file from another, even after a rename."""
    return stat_result.st_dev, stat_result.st_ino


def lock_path_for(path: Path) -> Path:
    """Return the lock file that guards a history file, the same whatever name the history is given."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}{LOCK_SUFFIX}")


def try_lock(descriptor: int) -> bool:
    """Take an exclusive lock on an open file without waiting; the OS drops it when we die."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(descriptor, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def read_holder(descriptor: int | None) -> str | None:
    """Return the process id the lock holder wrote into the lock file, or None."""
    if descriptor is None:
        return None
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        text = os.read(descriptor, 32).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def already_running(path: Path, holder: str | None) -> AlreadyRunning:
    """Return the error for a history file that another reader writes."""
    who = f"another read_client (process {holder})" if holder else "another read_client"
    return AlreadyRunning(
        f"{path} is already being written by {who}; stop that one, or give this one another --log_path"
    )


class HistoryFile:
    """The history file: opened once for appending, locked against a second reader, reopened if moved."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None
        self._lock: int | None = None
        self._identity: tuple[int, int] | None = None
        self._needs_newline = False
        self._at_line_start = True  # what was written last ends a line

    def open(self) -> None:
        """Open (creating owner-only), check it is a regular file, take the lock; raise FileError or AlreadyRunning."""
        try:
            self._open_file()
        except OSError as error:
            self.close()
            raise FileError(
                f"cannot open history file {self.path}: {describe_error(error)}; choose another --log_path"
            ) from error
        except ChatError:
            self.close()
            raise

    def _open_file(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._refuse_unless_regular(os.stat(self.path))
        descriptor = os.open(self.path, OPEN_FLAGS | PROBE_FLAGS, OWNER_ONLY)
        self._descriptor = descriptor
        status = os.fstat(descriptor)
        self._refuse_unless_regular(status)
        if PROBE_FLAGS:
            os.set_blocking(descriptor, True)
        self._take_lock()
        # The file itself is locked too, so a second reader finds it by any name, a hard link included.
        if not try_lock(descriptor):
            # Our lock file was free, so whoever holds this file knows it by another name.
            raise already_running(self.path, None)
        self._identity = identify_file(status)
        self._needs_newline = status.st_size > 0 and not self._ends_with_newline()

    def _refuse_unless_regular(self, status: os.stat_result) -> None:
        # A FIFO or a device would block our writes or swallow them: the history must be a file.
        if not stat.S_ISREG(status.st_mode):
            raise FileError(
                f"cannot open history file {self.path}: it is not a regular file; choose another --log_path"
            )

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as file:
            file.seek(-1, os.SEEK_END)
            return file.read(1) == NEWLINE

    def _take_lock(self) -> None:
        """Lock the file beside the history that names us; the first reader keeps it until it ends."""
        if self._lock is not None:
            return
        lock_path = lock_path_for(self.path)
        try:
            self._lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), OWNER_ONLY)
        except OSError as error:
            raise FileError(
                f"cannot create the lock file {lock_path} beside the history: {describe_error(error)}; "
                "choose another --log_path"
            ) from error
        if not try_lock(self._lock):
            raise already_running(self.path, read_holder(self._lock))
        os.lseek(self._lock, 0, os.SEEK_SET)
        pid = f"{os.getpid()}\n".encode()
        os.write(self._lock, pid)
        os.ftruncate(self._lock, len(pid))

    def close(self) -> None:
        """Close the file and release the lock."""
        for descriptor in (self._descriptor, self._lock):
            if descriptor is not None:
                os.close(descriptor)
        self._descriptor = self._lock = None

    def _follow_path(self) -> bool:
        """Reopen at the configured path if the file there is no longer ours; tell if we did."""
        try:
            current = identify_file(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current == self._identity:
            return False
        logger.warning("history file %s was moved or deleted; continuing in a new one", self.path)
        if self._descriptor is not None:
            if not self._at_line_start:
                # End the cut line where it began, so the moved file ends whole.
                with contextlib.suppress(OSError):
                    os.write(self._descriptor, NEWLINE)
            os.close(self._descriptor)
            self._descriptor = None
        self._open_file()
        return True

    def write(self, text: str) -> None:
        """Append text, whole, to the file now at the configured path (blocking: call it from a thread)."""
        try:
            if self._follow_path():
                now = datetime.now()
                note = "history continues here; the earlier file was moved or deleted"
                if not self._at_line_start:
                    # The rest of a cut line gets a stamp of ours: it must not start a line the chat chose.
                    text = f"{format_stamp(now)} {CONTINUED}{text}"
                    self._at_line_start = True
                text = format_status_line(note, now) + text
            if self._needs_newline:
                # The last run was cut off mid-line (a full disk, a crash): do not glue onto it.
                text = "\n" + text
                self._needs_newline = False
            assert self._descriptor is not None
            data = memoryview(text.encode(ENCODING))
            while data:
                data = data[os.write(self._descriptor, data) :]
            self._at_line_start = text.endswith("\n")
        except OSError as error:
            raise FileError(f"cannot write history file {self.path}: {describe_error(error)}") from error


class Echo:
    """Prints received chat from a thread: the history never waits for stdout, and stdout memory is bounded."""

    def __init__(self, out: TextIO, history_path: Path) -> None:
        def write(text: str) -> None:
            out.write(text)
            out.flush()

        def skip_note(count: int) -> str:
            what = f"{count} line{'' if count == 1 else 's'} not shown here (stdout was too slow)"
            return format_status_line(f"{what}; they are in {history_path}", datetime.now())

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
    """Text received but not yet on disk, in order; asks to pause the connection while it holds too much."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._shown: list[str] = []  # the part of it that goes to stdout too: chat, not notes
        self._size = 0
        self._ready = asyncio.Event()
        self._paused = False
        self.pause: Callable[[bool], None] | None = None  # the current connection's

    def add(self, text: str, show: bool = True) -> None:
        """Queue text for the history file, and for stdout if show."""
        if not text:
            return
        self._parts.append(text)
        if show:
            self._shown.append(text)
        self._size += len(text)
        self._ready.set()
        if self._size > JOURNAL_HIGH_CHARS and not self._paused and self.pause is not None:
            self._paused = True
            self.pause(True)

    def take(self) -> tuple[str, str]:
        """Return everything queued for the history and for stdout, and forget it."""
        text, shown = "".join(self._parts), "".join(self._shown)
        self._parts.clear()
        self._shown.clear()
        self._size = 0
        self._ready.clear()
        if self._paused:
            self._paused = False
            if self.pause is not None:
                self.pause(False)
        return text, shown

    @property
    def empty(self) -> bool:
        """Tell whether nothing is queued."""
        return not self._parts

    async def wait(self) -> None:
        """Return once there is something to take."""
        await self._ready.wait()

    def wake(self) -> None:
        """Wake a waiting writer even with nothing queued."""
        self._ready.set()


class Recorder:
    """Writes the journal to the history file, then to stdout; nothing taken from the journal is dropped."""

    def __init__(self, history: HistoryFile, echo: Echo) -> None:
        self.journal = Journal()
        self._history = history
        self._echo = echo
        self._closing = False
        self._write = aiofiles.os.wrap(history.write)  # one thread hop per batch
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._write_forever())

    async def _write_forever(self) -> None:
        while True:
            await self.journal.wait()
            text, shown = self.journal.take()
            if text:
                await self._write(text)
            if shown:
                self._echo.show(shown)
            if self._closing and self.journal.empty:
                return

    async def close(self) -> None:
        """Write out everything queued, then stop; raise what the writing raised."""
        self._closing = True
        self.journal.wake()
        await self.task


class ConnectionLog:
    """One connection's sink: stamps what arrives into the journal, and spots the posting port's greeting."""

    def __init__(self, tail: ChatTail) -> None:
        self._tail = tail
        self._stamper = LineStamper()
        self._head: bytearray | None = bytearray()  # the first bytes, until we know they are chat
        self._connection: ReceivingConnection | None = None

    @property
    def delivered_line(self) -> bool:
        """Tell whether at least one whole line came over this connection."""
        return self._stamper.completed

    def connected(self, connection: ReceivingConnection) -> None:
        self._connection = connection
        self._tail.connected = True
        self._tail.journal.pause = connection.pause
        self._tail.note(f"connected to {self._tail.address}")

    def received(self, data: bytes) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("<< %r", data)
        if self._head is not None:
            data = self._check_head(data)
        if data:
            self._tail.journal.add(self._stamper.feed(data, format_stamp(datetime.now())))

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

    def flush(self) -> str:
        """Return what is held of an unfinished line, as history text."""
        stamp = format_stamp(datetime.now())
        held = self._stamper.feed(bytes(self._head), stamp) if self._head else ""
        self._head = None
        return held + self._stamper.flush(stamp)


class ChatTail:
    """Receives the chat into the journal, reconnecting forever."""

    def __init__(
        self,
        settings: ReaderSettings,
        journal: Journal,
        make_delays: DelayFactory,
        service: ServiceNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.make_delays = make_delays
        self.address = format_address(settings.host, settings.port)
        self.connected = False
        self.service = service or ServiceNotifier({})  # an empty environment: one that never sends

    def note(self, text: str, level: int = logging.INFO) -> None:
        """Report a connection event on stderr and in the history file."""
        text = sanitize_text(text)
        logger.log(level, "%s", text)
        self.journal.add(format_status_line(text, datetime.now()), show=False)
        self.service.status(text)

    async def receive(self, log: ConnectionLog) -> None:
        """Hold one connection until it ends; whatever ends it, what arrived is in the journal."""
        self.connected = False
        self.note(f"connecting to {self.address}")
        try:
            async with open_receiver(self.settings.host, self.settings.port, log, self.settings.connect_timeout) as (
                connection
            ):
                await connection.wait_ended()
        finally:
            self.journal.pause = None
            self.journal.add(log.flush())

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
            what = f"connection lost: {describe_error(error)}" if self.connected else describe_error(error)
            self.note(f"{what}; next try in {delay:.1f} s", logging.WARNING)
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


async def run(settings: ReaderSettings, out: TextIO, make_delays: DelayFactory = backoff) -> int:
    """Tail the chat until a signal; return the exit code."""
    with SignalCatcher() as signals, ServiceNotifier() as service:
        history = HistoryFile(settings.log_path)
        await asyncio.to_thread(history.open)
        echo = Echo(out, settings.log_path)
        try:
            recorder = Recorder(history, echo)
            tail = ChatTail(settings, recorder.journal, make_delays, service)
            try:
                async with service.watchdog():
                    service.ready()  # the history file is open and locked: we are working
                    signum = await run_until_signal(watch(tail.run(), recorder.task), signals)
                tail.note(f"stopped by {signal.Signals(signum or signal.SIGINT).name}")
            finally:
                # Whatever stopped us, every line received goes to disk before we exit.
                await recorder.close()
            return signals.exit_code
        finally:
            echo.close()
            history.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run read_client from the command line; return the exit code."""
    make_output_safe(sys.stdout)
    make_output_safe(sys.stderr)
    configure_logging(verbose=False)  # for warnings about .env while the settings are read
    try:
        settings = parse_settings(argv)
        configure_logging(settings.verbose, background=True)
        return asyncio.run(run(settings, RawTextOutput(sys.stdout)))
    except ChatError as error:
        logger.error("%s", error)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        # We are on the way out: another Ctrl-C must not break off the last writes with a traceback.
        ignore_stop_signals()
        flush_logging()


def ignore_stop_signals() -> None:
    """Let SIGINT, SIGTERM and SIGHUP do nothing from now on."""
    for signum in SignalCatcher.SIGNALS:
        with contextlib.suppress(OSError, ValueError):  # ValueError: not the main thread
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
