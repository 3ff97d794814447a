"""The history file: its path pattern, its lock, its two formats, and writing to it."""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from _minechat.jsonl import JsonHistory
from _minechat.stamping import (
    JSONL_FORMAT,
    TEXT_FORMAT,
    LineStamper,
    Moment,
    StampClock,
    escape_note,
    split_strftime,
)
from chat_io import (
    ENCODING,
    NEWLINE,
    STATUS_MARK,
    AlreadyRunning,
    ChatError,
    FileError,
    describe_error,
    lock_file,
)

logger = logging.getLogger(__name__)

OWNER_ONLY = 0o600
OWNER_ONLY_FOLDER = 0o700

OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
# Opening a FIFO for writing would wait for a reader forever; non-blocking, it fails or opens at once.
PROBE_FLAGS = getattr(os, "O_NONBLOCK", 0)
# Hidden and specific, so it cannot be another tool's file (`--log_path poetry` must not touch poetry.lock).
LOCK_SUFFIX = ".read_client.lock"
# How much of an unfinished last line is kept in memory, to be written whole into a new file if the old one moves
# while a full disk holds the rest.
LINE_HEAD_BYTES = 64 * 1024
# What a long line cut by a rotation says where it goes on in the new file.
CONTINUED = "(continued) "
# Errors of a write that room on the disk would fix: a pause, not the end.
NO_SPACE_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


def identify_file(stat_result: os.stat_result) -> tuple[int, int]:
    """Return what tells one file from another, even after a rename."""
    return stat_result.st_dev, stat_result.st_ino


def lock_path_for(path: Path) -> Path:
    """Return the lock file that guards a history file, the same whatever name the history is given."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}{LOCK_SUFFIX}")


# What logrotate and `mv chat.txt chat.txt.1` make of a history: name.1, name.2, name-20261127.
ROTATED_SUFFIX = r"(?:\.\d+|-\d{8}(?:\d+)?)"
# What gzip and logrotate's compress add to a finished file's name.
GZIP_SUFFIX = ".gz"

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

    def shape(self) -> re.Pattern[str]:
        """Return what the names of this history's files look like: dated or rotated, perhaps gzipped."""
        if not self.dated:
            body = re.escape(self._fixed) + ROTATED_SUFFIX
        else:
            body = "".join(
                (r"\d+" if text in DIGIT_FIELDS else r"[^/\\]+") if is_field else re.escape(text)
                for text, is_field in self._parts
            )
        return re.compile(body + f"(?:{re.escape(GZIP_SUFFIX)})?")

    def earlier_files(self, current: Path) -> list[Path]:
        """Return the other files this pattern matches, and rotated copies of a fixed name, last modified first."""
        if not self.dated:
            wildcards = [glob.escape(self._fixed) + "[.-]*"]
        else:
            wildcard = "".join("*" if is_field else glob.escape(text) for text, is_field in self._parts)
            wildcards = [wildcard, wildcard + GZIP_SUFFIX]
        shape = self.shape()
        # By real path: with .. in the pattern, one file can be found by several names.
        seen = {os.path.normcase(os.path.realpath(current))}
        found = []
        names = {name for wildcard in wildcards for name in glob.glob(wildcard)}
        for name in sorted(names):
            real = os.path.normcase(os.path.realpath(name))
            # A .gz beside its plain file is a compression cut off before the plain one went: read one copy.
            compressed_twice = name.endswith(GZIP_SUFFIX) and name.removesuffix(GZIP_SUFFIX) in names
            if not shape.fullmatch(name) or real in seen or compressed_twice:
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


class DiskFull(Exception):
    """A write stopped (for want of room, or the file cannot be had): what it holds was not written yet, nor is
    the rest that HistoryFile keeps. Call write() again to go on."""

    def __init__(self, unwritten: list[tuple[str, str]], error: BaseException | None = None) -> None:
        super().__init__(describe_error(error) if error is not None else "no space left for the history")
        self.unwritten = unwritten  # the entries not begun, for write() once there is room
        self.error = error  # what stopped it: None or an OSError of no space means a full disk

    @property
    def no_space(self) -> bool:
        """Tell whether a full disk (or quota) stopped it, rather than a file that cannot be had."""
        return self.error is None or (isinstance(self.error, OSError) and is_no_space(self.error))


def is_no_space(error: OSError) -> bool:
    """Tell whether a write failed for want of room on the disk (or in the quota)."""
    return error.errno in NO_SPACE_ERRNOS


@dataclass
class OpenFile:
    """One open history file: its descriptor, what tells it from another, what ends a line a crash left unfinished."""

    descriptor: int | None = None
    identity: tuple[int, int] | None = None
    tail_repair: bytes = b""  # written before anything else


class HistoryLock:
    """The lock file beside a history: our process id in it, and a file lock the OS drops when we die."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        """Tell whether we hold the lock."""
        return self._descriptor is not None

    def take(self, history: Path) -> None:
        """Take the lock for history; raise FileError if the lock file cannot be made, AlreadyRunning if it is held."""
        try:
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), OWNER_ONLY)
        except OSError as error:
            raise FileError(
                f"cannot create the lock file {self.path} beside the history: {describe_error(error)}; "
                "choose another --log_path"
            ) from error
        if not lock_file(self._descriptor, wait=False):
            holder = read_holder(self._descriptor)
            self.release()  # so held says no
            raise already_running(history, holder)
        os.lseek(self._descriptor, 0, os.SEEK_SET)
        pid = f"{os.getpid()}\n".encode()
        try:
            os.write(self._descriptor, pid)
        except OSError as error:
            if not is_no_space(error):
                raise
            pid = b""  # held all the same: a full disk is a pause, and the PID only names who holds it
        os.ftruncate(self._descriptor, len(pid))  # a longer PID of an earlier run must not trail ours

    def release(self) -> None:
        """Close the lock file, which releases the lock."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def refuse_unless_regular(path: Path, status: os.stat_result) -> None:
    """Raise FileError unless status is a regular file's: a FIFO or a device would block our writes or swallow them."""
    if not stat.S_ISREG(status.st_mode):
        raise FileError(f"cannot open history file {path}: it is not a regular file; choose another --log_path")


def repair_tail(path: Path, history_format: HistoryFormat) -> bytes:
    """Return what ends the file's unfinished last line as its format wants (JSON Lines: one whole record), or b""."""
    with open(path, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        file.seek(end - 1)
        if file.read(1) == NEWLINE:
            return b""
        file.seek(max(0, end - TAIL_REPAIR_BYTES))
        tail = file.read().rpartition(NEWLINE)[2]
    return history_format.end_cut_line(tail)


def line_head_after(head: bytearray | None, written: memoryview) -> bytearray | None:
    """Return the part of the last line on disk once written is appended (None: too long to keep)."""
    tail = bytes(written[-LINE_HEAD_BYTES:])
    end = tail.rfind(NEWLINE)
    if end >= 0:
        return bytearray(tail[end + 1 :])
    if len(written) > LINE_HEAD_BYTES or head is None:
        return None
    head += tail
    return head if len(head) <= LINE_HEAD_BYTES else None


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
        self._file = OpenFile()  # the file written now
        self._lock: HistoryLock | None = None  # made when first taken: the folders may be made just before
        self._at_line_start = True  # what was written last ends a line
        self._line_cut = False  # a line was cut short by a move: its rest goes on in the new file
        self._unwritten = bytearray()  # what a full disk left of the last write to this file, to write first
        self._trouble: BaseException | None = None  # why the last write() stopped, if it did
        self._line_head: bytearray | None = bytearray()  # the last line's part in the file (None: too long to keep)

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
        try:
            self._open_path()
        except BaseException:
            self._close_file()  # refused (another reader's file, not a file at all): never written to
            raise

    def _open_path(self) -> None:
        if self.pattern.dated:
            make_folders(self.path.parent)  # logs/%Y/ gets a new folder each year
        with contextlib.suppress(FileNotFoundError):
            refuse_unless_regular(self.path, os.stat(self.path))
        descriptor = os.open(self.path, OPEN_FLAGS | PROBE_FLAGS, OWNER_ONLY)
        self._file.descriptor = descriptor
        status = os.fstat(descriptor)
        refuse_unless_regular(self.path, status)
        if PROBE_FLAGS:
            os.set_blocking(descriptor, True)
        self._take_lock()
        # The file itself is locked too, so a second reader finds it by any name, a hard link included.
        if not lock_file(descriptor, wait=False):
            # Our lock file was free, so whoever holds this file knows it by another name.
            raise already_running(self.path, None)
        self._file.identity = identify_file(status)
        self._line_head = bytearray()
        self._file.tail_repair = repair_tail(self.path, self._format) if status.st_size > 0 else b""

    def _take_lock(self) -> None:
        """Lock the file that names us, beside the history or its pattern; the first reader keeps it until it ends."""
        if self._lock is None or not self._lock.held:
            self._lock = HistoryLock(self.pattern.lock_path())
            self._lock.take(self.path)

    def close(self) -> None:
        """Close the file and release the lock."""
        self._close_file()
        if self._lock is not None:
            self._lock.release()

    def _note(self, text: str, event: str, details: Mapping[str, object]) -> str:
        return self._format.note(self._clock.fresh(), text, event, details)

    def _follow_path(self) -> bool:
        """Reopen at the configured path if the file there is no longer ours; tell if we did."""
        try:
            current = identify_file(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current == self._file.identity:
            return False
        logger.warning("history file %s was moved or deleted; continuing in a new one", self.path)
        with contextlib.suppress(OSError):  # the moved file may be gone
            self._end_cut_line()
        if self._unwritten and self._line_head is None:
            self._unwritten.clear()  # the rest of a line too long to keep cannot start the new one
        elif self._unwritten:
            self._unwritten[:0] = self._line_head  # the line the move cut goes into the new file whole
        self._close_file()
        self._open_file()
        return True

    def _end_cut_line(self) -> None:
        """End a line that a move cut short where it is, so the file left behind ends whole."""
        if not self._at_line_start:
            self._line_cut = True
            self._write_now(self._format.cut_end)

    def _close_file(self) -> None:
        if self._file.descriptor is not None:
            os.close(self._file.descriptor)
            self._file.descriptor = None

    def _switch(self, path: str) -> None:
        """Go on in the file for a new date: say whence at the start of the new one and where at the end of the old.

        If the new file cannot be had (a folder in its place, another reader on it, no room for its
        first line), the history stays in the old one, with a note: received lines are never
        dropped for want of a file.
        """
        old_path = self.path
        old_file, self._file = self._file, OpenFile()
        self._name, self.path = path, Path(path)
        try:
            self._open_file()
            started = self._note(f"history continues from {old_path}", "file_started", {"previous_file": str(old_path)})
            self._write_now(started)
            if self._unwritten:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except (OSError, ChatError) as error:
            self._unwritten.clear()  # the new file's first line, which it never got
            self._close_file()
            self._file = old_file
            self.path = old_path  # entries for the refused date now go on here, without trying again
            self._at_line_start = True
            logger.warning("cannot start history file %s (%s); it goes on in %s", path, describe_error(error), old_path)
            reason = f"cannot start {path}: {describe_error(error)}; the history goes on here"
            self._write_now(self._note(reason, "file_refused", {"file": path}))
            return
        new_file, self._file = self._file, old_file
        self._write_now(self._note(f"history continues in {path}", "file_ended", {"next_file": path}))
        self._unwritten.clear()  # a note the old file has no room for cannot go into the new one
        self._close_file()
        self._file = new_file
        self._at_line_start = True

    def write(self, entries: Iterable[tuple[str, str]]) -> None:
        """Append each (file, text) entry, whole, to its file (blocking: call it from a thread).

        On a full disk, raise DiskFull with the entries not begun; the rest of the one begun is kept
        here, and the next write() starts with it.
        """
        entries = list(entries)
        self._trouble = None
        for index, (path, text) in enumerate(entries):
            if not self._ready_for(path):
                raise DiskFull(entries[index:], self._trouble)
            if self._line_cut:
                # The rest of a cut line gets a start of ours: it must not start a line the chat chose.
                text = self._format.continued(self._clock.fresh()) + text
                self._line_cut = False
            self._write_now(text)
        if self._unwritten and not self._ready_for(self._name):  # what a write left over, written now if it can be
            raise DiskFull([], self._trouble)

    def _ready_for(self, path: str) -> bool:
        """Have the file for path open, with nothing left over before it; tell whether it is (else why: _trouble)."""
        try:
            if self._file.descriptor is None:
                self._open_file()  # a file refused earlier: tried again
                self._write_now(self._note(REOPENED_NOTE, "file_reopened", {}))
            elif path == self._name and self._follow_path():
                self._write_now(self._note(REOPENED_NOTE, "file_reopened", {}))
            if not self._write_unwritten():
                return False
            if path != self._name:
                self._switch(path)
        except (OSError, ChatError) as error:
            self._trouble = error
            return False
        return not self._unwritten

    def _write_unwritten(self) -> bool:
        """Write what a full disk left over; tell whether all of it is written now."""
        if self._unwritten:
            data, self._unwritten = bytes(self._unwritten), bytearray()
            self._put(memoryview(data))
        return not self._unwritten

    def _write_now(self, text: str) -> None:
        if not text:
            return
        data = text.encode(ENCODING)
        if self._file.tail_repair:
            # The last run was cut off mid-line (a full disk, a crash): do not glue onto it.
            data = self._file.tail_repair + data
            self._file.tail_repair = b""
        self._at_line_start = text.endswith("\n")
        if self._unwritten:
            self._unwritten += data  # behind what did not fit: the order in the file is kept
            return
        self._put(memoryview(data))

    def _put(self, data: memoryview) -> None:
        """Write data; what a full disk does not take is kept in _unwritten, byte for byte."""
        assert self._file.descriptor is not None
        while data:
            try:
                written = os.write(self._file.descriptor, data)
            except OSError as error:  # no room, or the file went bad: kept, byte for byte, for the next write()
                self._trouble = error
                self._unwritten += data
                return
            self._line_head = line_head_after(self._line_head, data[:written])
            data = data[written:]


class TextHistory:
    """History as text lines: the stamp, a space, the line; notes are marked with ***."""

    separate_display = False  # stdout shows the very text written to the file

    def make_stamper(self) -> LineStamper:
        return LineStamper()

    def stamp(self, moment: Moment) -> str:
        return moment.stamp

    def note(self, moment: Moment, text: str, event: str, details: Mapping[str, object]) -> str:
        return format_status(moment, text)

    cut_end = "\n"  # ends a line cut short by a move

    def end_cut_line(self, tail: bytes) -> bytes:
        """Return what ends a line an earlier run left unfinished (a crash, a full disk)."""
        return NEWLINE

    def continued(self, moment: Moment) -> str:
        """Return what starts the rest of a cut line in the new file."""
        return f"{moment.stamp} {CONTINUED}"


HistoryFormat = TextHistory | JsonHistory
HISTORY_FORMATS: dict[str, HistoryFormat] = {TEXT_FORMAT: TextHistory(), JSONL_FORMAT: JsonHistory()}


def format_status(moment: Moment, text: str) -> str:
    """Return a note as a line of the text history and of stdout, escaped: every note is made here."""
    return f"{moment.stamp} {STATUS_MARK} {escape_note(text)}\n"


# How far back a cut JSON Lines record is looked for when the history is opened.
TAIL_REPAIR_BYTES = 16 * 1024 * 1024
