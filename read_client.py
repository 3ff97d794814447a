"""Tail the minechat chat forever: print every line and append it, stamped, to a history file."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
import re
import signal
import stat
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

import aiofiles.os
import configargparse

from chat_io import (
    DEFAULT_READ_PORT,
    DEFAULT_TIME_FORMAT,
    ENCODING,
    EXIT_INTERRUPTED,
    GREETING,
    MAX_LINE_BYTES,
    NEWLINE,
    NICK_SEPARATOR,
    RECORD_END,
    STATUS_MARK,
    AlreadyRunning,
    BackgroundWriter,
    ChatError,
    ConnectionFailed,
    FileError,
    JsonLineStamper,
    LineStamper,
    Moment,
    RawTextOutput,
    ReceivingConnection,
    ServiceNotifier,
    SignalCatcher,
    StampClock,
    WrongPort,
    backoff,
    cancel_and_wait,
    configure_logging,
    describe_error,
    exit_code_for,
    flush_logging,
    format_address,
    format_json_record,
    format_stamp,
    ignore_stop_signals,
    is_retryable,
    make_output_safe,
    make_parser,
    open_receiver,
    parse_arguments,
    run_until_signal,
    sanitize_text,
    split_strftime,
    text_value,
    utf8_cut,
)

logger = logging.getLogger("read_client")

DEFAULT_LOG_PATH = "chat_logs.txt"
DEFAULT_BACKLOG = 10
TEXT_FORMAT = "text"
JSONL_FORMAT = "jsonl"
OWNER_ONLY = 0o600
OWNER_ONLY_FOLDER = 0o700

DelayFactory = Callable[[], Iterator[float]]


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
        log_path=full_pattern(args.log_path, cwd),
        connect_timeout=args.connect_timeout,
        verbose=args.verbose,
        time_format=args.time_format,
        history_format=args.history_format,
        backlog=args.backlog,
    )


# Fields a history path may hold: those of the C standard, which every platform's strftime knows.
# %f is left out: it would start a new file for every chunk received.
# Not %x: its slashes (11/28/26) would make folders of a date.
PATH_FIELDS = frozenset("aAbBcdHIjmMpSUwWXyYzZGuV")


def log_path_value(value: str) -> str:
    """Parse --log_path for argparse: strftime fields are checked, a literal % must be written %%."""
    try:
        parts = split_strftime(value)
    except ValueError as error:
        raise configargparse.ArgumentTypeError(str(error)) from None
    unknown = sorted({text for text, is_field in parts if is_field and text not in PATH_FIELDS})
    if unknown:
        fields = ", ".join(f"%{field}" for field in unknown)
        raise configargparse.ArgumentTypeError(f"{fields} is no date or time field; a literal % is written %%")
    return value


def time_format_value(value: str) -> str:
    """Parse --time-format for argparse: a strftime format that gives a stamp on one line."""
    text_value(value)
    if "\0" in value:  # strftime would stop there, silently
        raise configargparse.ArgumentTypeError("it holds a NUL character")
    try:
        sample = datetime.now().astimezone().strftime(value)
    except ValueError as error:  # Windows refuses unknown fields
        raise configargparse.ArgumentTypeError(f"not a strftime format: {error}") from None
    if not sample.strip():
        raise configargparse.ArgumentTypeError("it gives an empty stamp")
    if sanitize_text(sample) != sample:
        raise configargparse.ArgumentTypeError("it gives a stamp with control characters or line breaks")
    return value


def backlog_count(value: str) -> int:
    """Parse --backlog for argparse: a number of lines, 0 or more."""
    try:
        count = int(value)
    except ValueError:
        raise configargparse.ArgumentTypeError(f"{value!r} is not a number of lines") from None
    if count < 0:
        raise configargparse.ArgumentTypeError(f"{count} is less than 0")
    return count


def full_pattern(value: str, cwd: Path | None = None) -> Path:
    """Return the history path pattern a value names from the current directory (whose % stay literal)."""
    if Path(value).is_absolute():
        return Path(value)
    folder = str(Path.cwd() if cwd is None else cwd)
    return Path(folder.replace("%", "%%")) / value


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


# Fields that expand to digits only; every other field (names of days and months, zones) to a word.
DIGIT_FIELDS = frozenset("dHIjmMSUwWyYGuV")
# What stands for a path separator in the name of a dated history's lock file ("%_" is no strftime field).
LOCK_SEPARATOR = "%_"


def has_fields(pattern: str) -> bool:
    """Tell whether a path pattern holds strftime fields."""
    return any(is_field for _, is_field in split_strftime(pattern))


def unescape(pattern: str) -> str:
    """Return a path pattern without fields as the path it names (%% becomes %)."""
    return "".join(text for text, _ in split_strftime(pattern))


class HistoryPattern:
    """The history path, perhaps with strftime fields: which file holds which moment, its lock, its earlier files."""

    def __init__(self, pattern: Path) -> None:
        self.text = str(pattern)
        self._parts = split_strftime(self.text)
        self.dated = any(is_field for _, is_field in self._parts)
        self._fixed = "" if self.dated else unescape(self.text)

    def expand(self, when: datetime) -> str:
        """Return the history file for a moment (local time)."""
        if not self.dated:
            return self._fixed
        # Field by field: the literal parts may hold bytes that are not UTF-8, which strftime refuses.
        return "".join(when.strftime("%" + text) if is_field else text for text, is_field in self._parts)

    def lock_path(self) -> Path:
        """Return the lock file that guards every file of this history, the same whatever name it is given.

        For dated files it lies in the last folder without fields, named after the rest of the pattern.
        """
        if not self.dated:
            return lock_path_for(Path(self._fixed))
        parts = Path(self.text).parts
        first = next(index for index, part in enumerate(parts) if has_fields(part))
        folder = os.path.realpath(Path(*(unescape(part) for part in parts[:first])))
        return Path(folder) / f".{LOCK_SEPARATOR.join(parts[first:])}{LOCK_SUFFIX}"

    def earlier_files(self, current: Path) -> list[Path]:
        """Return the other files this pattern matches, last modified first (none without fields)."""
        if not self.dated:
            return []
        wildcard = "".join("*" if is_field else glob.escape(text) for text, is_field in self._parts)
        shape = re.compile(
            "".join(
                (r"\d+" if text in DIGIT_FIELDS else r"[^/\\]+") if is_field else re.escape(text)
                for text, is_field in self._parts
            )
        )
        # By real path: with .. in the pattern, one file can be found by several names.
        seen = {os.path.normcase(os.path.realpath(current))}
        found = []
        for name in glob.glob(wildcard):
            real = os.path.normcase(os.path.realpath(name))
            if not shape.fullmatch(name) or real in seen:
                continue
            seen.add(real)
            with contextlib.suppress(OSError):
                status = os.stat(name)
                if stat.S_ISREG(status.st_mode):
                    found.append((status.st_mtime, name))
        return [Path(name) for _, name in sorted(found, reverse=True)]


def make_folders(folder: Path) -> None:
    """Create a folder and the missing ones above it, each readable by its owner only."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process was quicker
            os.mkdir(path, OWNER_ONLY_FOLDER)


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


REOPENED_NOTE = "history continues here; the earlier file was moved or deleted"


class HistoryFile:
    """The history file: opened for appending, locked against a second reader, reopened if moved.

    With a dated pattern, write() moves on to the next file when the entries it gets name another one,
    with a note at the end of the old file and at the start of the new.
    """

    def __init__(self, pattern: HistoryPattern, history_format: HistoryFormat, clock: StampClock) -> None:
        self.pattern = pattern
        self.path = Path(pattern.text)  # the file written now, once open
        self._name = ""  # its name as the clock gives it, which entries are compared with
        self._format = history_format
        self._clock = clock
        self._descriptor: int | None = None
        self._lock: int | None = None
        self._identity: tuple[int, int] | None = None
        self._needs_newline = False
        self._at_line_start = True  # what was written last ends a line
        self._line_cut = False  # a line was cut short by a move: its rest goes on in the new file

    def open(self, path: str) -> None:
        """Open path (made owner-only), check it is a regular file, take the lock; raise FileError or AlreadyRunning."""
        self._name, self.path = path, Path(path)
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
        if self.pattern.dated:
            make_folders(self.path.parent)  # logs/%Y/ gets a new folder each year
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
        """Lock the file that names us, beside the history or its pattern; the first reader keeps it until it ends."""
        if self._lock is not None:
            return
        lock_path = self.pattern.lock_path()
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

    def _note(self, text: str, event: str, details: Mapping[str, object]) -> str:
        return self._format.note(self._clock.fresh(), text, event, details)

    def _follow_path(self) -> bool:
        """Reopen at the configured path if the file there is no longer ours; tell if we did."""
        try:
            current = identify_file(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current == self._identity:
            return False
        logger.warning("history file %s was moved or deleted; continuing in a new one", self.path)
        with contextlib.suppress(OSError):  # the moved file may be gone
            self._end_cut_line()
        self._close_file()
        self._open_file()
        return True

    def _end_cut_line(self) -> None:
        """End a line that a move cut short where it is, so the file left behind ends whole."""
        if not self._at_line_start:
            self._line_cut = True
            self._write_now(self._format.cut_end)

    def _close_file(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def _switch(self, path: str) -> None:
        """Go on in the file for a new date: say where at the end of the old one and whence at the start of the new.

        If the new file cannot be had (a folder in its place, another reader on it), the history
        stays in the old one, with a note: received lines are never dropped for want of a file.
        """
        old_path = self.path
        old_file = (self._descriptor, self._identity, self._needs_newline)
        self._descriptor = None
        self._name, self.path = path, Path(path)
        try:
            self._open_file()
        except (OSError, ChatError) as error:
            if self._descriptor is not None:
                os.close(self._descriptor)
            self._descriptor, self._identity, self._needs_newline = old_file
            self.path = old_path  # entries for the refused date now go on here, without trying again
            logger.warning("cannot start history file %s (%s); it goes on in %s", path, describe_error(error), old_path)
            reason = f"cannot start {path}: {describe_error(error)}; the history goes on here"
            self._write_now(self._note(reason, "file_refused", {"file": path}))
            return
        new_file = (self._descriptor, self._identity, self._needs_newline)
        self._descriptor, self._identity, self._needs_newline = old_file
        self._end_cut_line()  # never needed: a line goes on in the file where it began
        self._write_now(self._note(f"history continues in {path}", "file_ended", {"next_file": path}))
        self._close_file()
        self._descriptor, self._identity, self._needs_newline = new_file
        started = self._note(f"history continues from {old_path}", "file_started", {"previous_file": str(old_path)})
        self._write_now(started)

    def write(self, entries: Iterable[tuple[str, str]]) -> None:
        """Append each (file, text) entry, whole, to its file (blocking: call it from a thread)."""
        try:
            for path, text in entries:
                if path != self._name:
                    self._switch(path)
                elif self._follow_path():
                    self._write_now(self._note(REOPENED_NOTE, "file_reopened", {}))
                if self._line_cut:
                    # The rest of a cut line gets a start of ours: it must not start a line the chat chose.
                    text = self._format.continued(self._clock.fresh()) + text
                    self._line_cut = False
                self._write_now(text)
        except OSError as error:
            raise FileError(f"cannot write history file {self.path}: {describe_error(error)}") from error

    def _write_now(self, text: str) -> None:
        if not text:
            return
        if self._needs_newline:
            # The last run was cut off mid-line (a full disk, a crash): do not glue onto it.
            text = "\n" + text
            self._needs_newline = False
        assert self._descriptor is not None
        data = memoryview(text.encode(ENCODING))
        while data:
            data = data[os.write(self._descriptor, data) :]
        self._at_line_start = text.endswith("\n")


class TextHistory:
    """History as text lines: the stamp, a space, the line; notes are marked with ***."""

    separate_display = False  # stdout shows the very text written to the file

    def make_stamper(self) -> LineStamper:
        return LineStamper()

    def stamp(self, moment: Moment) -> str:
        return moment.stamp

    def note(self, moment: Moment, text: str, event: str, details: Mapping[str, object]) -> str:
        return f"{moment.stamp} {STATUS_MARK} {text}\n"

    cut_end = "\n"  # ends a line cut short by a move

    def continued(self, moment: Moment) -> str:
        """Return what starts the rest of a cut line in the new file."""
        return f"{moment.stamp} {CONTINUED}"


class JsonHistory:
    """History as JSON Lines: {"time", "nick", "text"} per chat line; notes add "event" and its details."""

    separate_display = True  # stdout stays text

    def make_stamper(self) -> LineStamper:
        return JsonLineStamper()

    def stamp(self, moment: Moment) -> str:
        return moment.iso

    def note(self, moment: Moment, text: str, event: str, details: Mapping[str, object]) -> str:
        return format_json_record(moment.iso, text, event=event, **details)

    # A record's text is streamed in whole escapes, so closing its string and object anywhere is valid JSON.
    cut_end = RECORD_END

    def continued(self, moment: Moment) -> str:
        """Return what opens a record for the rest of a cut line in the new file."""
        return f'{{"time": "{moment.iso}", "nick": null, "continued": true, "text": "'


HistoryFormat = TextHistory | JsonHistory
HISTORY_FORMATS: dict[str, HistoryFormat] = {TEXT_FORMAT: TextHistory(), JSONL_FORMAT: JsonHistory()}


def format_status(moment: Moment, text: str) -> str:
    """Return a status line for stdout."""
    return f"{moment.stamp} {STATUS_MARK} {text}\n"


class Echo:
    """Prints received chat from a thread: the history never waits for stdout, and stdout memory is bounded."""

    def __init__(self, out: TextIO, history_path: Callable[[], Path], clock: StampClock) -> None:
        def write(text: str) -> None:
            out.write(text)
            out.flush()

        def skip_note(count: int) -> str:
            what = f"{count} line{'' if count == 1 else 's'} not shown here (stdout was too slow)"
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
        if self._size > JOURNAL_HIGH_CHARS and not self._paused and self.pause is not None:
            self._paused = True
            self.pause(True)

    def take(self) -> tuple[list[tuple[str, str]], str]:
        """Return everything queued, as (history file, text) entries and text for stdout, and forget it."""
        entries = [(path, "".join(texts)) for path, texts in self._entries]
        shown = "".join(self._shown)
        self._entries.clear()
        self._shown.clear()
        self._size = 0
        self._ready.clear()
        if self._paused:
            self._paused = False
            if self.pause is not None:
                self.pause(False)
        return entries, shown

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
            entries, shown = self.journal.take()
            if entries:
                await self._write(entries)
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
        self._format = tail.history_format
        self._stamper = self._format.make_stamper()
        self._display = LineStamper() if self._format.separate_display else None  # stdout's text
        self._line_path = ""  # the file of the line still open, if one is
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
        self._tail.note(f"connected to {self._tail.address}", "connected", address=self._tail.address)

    def received(self, data: bytes) -> None:
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
                await connection.wait_ended()
        finally:
            self.journal.pause = None
            log.finish()

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


# --- backlog -------------------------------------------------------------------

BACKLOG_BLOCK_BYTES = 64 * 1024
# A backlog line longer than this is shown cut, with CUT_MARK; the history keeps it whole.
BACKLOG_LINE_BYTES = MAX_LINE_BYTES
CUT_MARK = " [...]"
# All backlog lines together are at most this long; older lines past it are left out.
BACKLOG_TOTAL_CHARS = 4 * 1024 * 1024


def lines_from_end(
    file: BinaryIO, block_size: int = BACKLOG_BLOCK_BYTES, limit: int = BACKLOG_LINE_BYTES
) -> Iterator[tuple[bytes, bool]]:
    """Yield a file's non-empty lines, last first, reading blocks back from its end; cut to limit bytes (then True).

    Lines are split at newline bytes before anything is decoded, so a character cut at a block's
    edge is whole again in its line; memory stays within a block and a line's first limit bytes.
    """
    position = file.seek(0, os.SEEK_END)
    partial = b""  # the line that began before position: the first limit bytes seen of it
    cut = False
    while position > 0:
        start = max(0, position - block_size)
        file.seek(start)
        data = file.read(position - start) + partial
        position = start
        lines = data.split(NEWLINE)
        for index in range(len(lines) - 1, 0, -1):
            line = lines[index]
            if line:
                yield trim_line(line, limit, cut and index == len(lines) - 1)
            cut = False
        partial, cut = trim_line(lines[0], limit, cut)
    if partial:
        yield partial, cut


def trim_line(line: bytes, limit: int, cut: bool) -> tuple[bytes, bool]:
    """Return a line's first limit bytes (between characters) and whether anything is cut off."""
    if len(line) <= limit:
        return line, cut
    return line[: utf8_cut(line, limit)], True


def status_shape(time_format: str) -> re.Pattern[str]:
    """Return a pattern for a text status line stamped with time_format: the stamp's shape, then ***."""
    sample = datetime.now().astimezone().strftime(time_format)
    pieces = []
    for token in re.findall(r"\d+|[^\W\d_]+|\s+|.", sample):
        if re.fullmatch(r"\d+", token):
            pieces.append(r"\d+")
        elif re.fullmatch(r"[^\W\d_]+", token):
            pieces.append(r"[^\W\d_]+")  # names of months, days, zones, AM and PM
        elif token.isspace():
            pieces.append(r"\s+")
        elif token in "+-":
            pieces.append("[+-]")  # a UTC offset's sign
        else:
            pieces.append(re.escape(token))
    return re.compile("".join(pieces) + re.escape(f" {STATUS_MARK} "))


def parse_record(line: str) -> dict[str, object] | None:
    """Return a JSON Lines history record, or None if the line is not one."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # a damaged line, or one nested beyond the parser's depth
        return None
    if isinstance(record, dict) and isinstance(record.get("time"), str) and isinstance(record.get("text"), str):
        return record
    return None


def show_record(record: dict[str, object], time_format: str) -> str:
    """Return a chat record as a text line, stamped with time_format."""
    try:
        stamp = format_stamp(datetime.fromisoformat(str(record["time"])), time_format)
    except ValueError:
        stamp = str(record["time"])
    nick = record.get("nick")
    text = f"{nick}{NICK_SEPARATOR}{record['text']}" if isinstance(nick, str) else str(record["text"])
    return f"{stamp} {text}"


def backlog_lines(paths: Iterable[Path], time_format: str) -> Iterator[str]:
    """Yield the chat lines of history files (of either format), last first, as stdout shows them; no notes."""
    shapes = [status_shape(time_format), status_shape(DEFAULT_TIME_FORMAT)]
    for path in paths:
        try:
            file = open(path, "rb")  # noqa: SIM115 (closed below, after the generator is done with it)
        except FileNotFoundError:
            continue
        with file:
            for raw, cut in lines_from_end(file):
                line = raw.decode(ENCODING, errors="replace").removesuffix("\r")
                record = parse_record(line)
                if record is not None:
                    if "event" in record:
                        continue
                    line = show_record(record, time_format)
                elif any(shape.match(line) for shape in shapes):
                    continue
                yield sanitize_text(line) + (CUT_MARK if cut else "")


def read_backlog(paths: Iterable[Path], count: int, time_format: str) -> list[str]:
    """Return the last count chat lines of the history, oldest first, within BACKLOG_TOTAL_CHARS."""
    found: list[str] = []
    size = 0
    for line in backlog_lines(paths, time_format):
        size += len(line) + 1
        if len(found) == count or size > BACKLOG_TOTAL_CHARS:
            break
        found.append(line)
    return found[::-1]


async def show_backlog(settings: ReaderSettings, history: HistoryFile, echo: Echo, clock: StampClock) -> None:
    """Print the last chat lines of the history, then a status line that marks where live chat begins."""

    def read() -> list[str]:
        paths = [history.path, *history.pattern.earlier_files(history.path)]
        return read_backlog(paths, settings.backlog, settings.time_format)

    try:
        lines = await asyncio.to_thread(read)
    except Exception as error:  # the backlog is a courtesy: a damaged history must not keep us from the chat
        logger.warning("cannot show the backlog: %s", describe_error(error))
        return
    if lines:
        what = f"the last {len(lines)} chat line{'' if len(lines) == 1 else 's'} of the history"
        echo.show("".join(line + "\n" for line in lines) + format_status(clock.fresh(), f"{what}; live chat follows"))


# --- running ---------------------------------------------------------------------


async def run(
    settings: ReaderSettings, out: TextIO, make_delays: DelayFactory = backoff, now: Callable[[], float] = time.time
) -> int:
    """Tail the chat until a signal; return the exit code."""
    with SignalCatcher() as signals, ServiceNotifier() as service:
        pattern = HistoryPattern(settings.log_path)
        history_format = HISTORY_FORMATS[settings.history_format]
        clock = StampClock(settings.time_format, pattern.expand, now)

        history = HistoryFile(pattern, history_format, clock)
        await asyncio.to_thread(history.open, clock.read().path)
        echo = Echo(out, lambda: history.path, clock)
        try:
            if settings.backlog:
                await show_backlog(settings, history, echo, clock)
            recorder = Recorder(history, echo)
            tail = ChatTail(settings, recorder.journal, make_delays, service, clock)
            try:
                async with service.watchdog():
                    service.ready()  # the history file is open and locked: we are working
                    signum = await run_until_signal(watch(tail.run(), recorder.task), signals)
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



if __name__ == "__main__":
    sys.exit(main())
