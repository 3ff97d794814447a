"""The archive as the query modes read it: every file of a history, oldest first, plain or gzipped, in blocks."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from _minechat.coverage import Coverage, Event, clip, event_of, json_report, text_report
from _minechat.entries import HistoryLines, make_lines
from _minechat.history import GZIP_SUFFIX, HistoryPattern
from _minechat.search import ContextPrinter, Matcher, Query, compile_pattern, decode_block
from chat_io import EXIT_OK, FileError, describe_error, plural

logger = logging.getLogger(__name__)

# How much of a file is decoded at a time: big enough that the per-block cost vanishes, small enough for memory.
BLOCK_BYTES = 4 * 1024 * 1024
# Blocks read ahead of the search: enough to keep the reading thread busy, few enough for memory.
BLOCKS_AHEAD = 2
# zlib's window bits for a gzip header and trailer (16 + the largest window).
GZIP_WBITS = 16 + zlib.MAX_WBITS
READ_BYTES = 256 * 1024  # compressed bytes read at a time
HAND_OVER_SECONDS = 0.1  # how often a reading thread whose blocks nobody takes looks whether to stop


def history_files(pattern: HistoryPattern, now: datetime | None = None) -> list[Path]:
    """Return every file of the history, oldest first: rotated and dated ones, gzipped or not, then the current one.

    Dated files go by the date in their names (a file gzipped later is no newer), the others by
    when they were last written.
    """
    current = Path(pattern.expand(now or datetime.now()))
    files = pattern.earlier_files(current)[::-1]
    if current.is_file():
        files.append(current)
    if pattern.dated:
        files.sort(key=lambda path: date_in_name(pattern, path) or datetime.min)  # stable: ties keep their order
    return files


def date_in_name(pattern: HistoryPattern, path: Path) -> datetime | None:
    """Return the moment a dated file's name stands for, or None if it cannot be read back."""
    name = str(path).removesuffix(GZIP_SUFFIX)
    try:
        return datetime.strptime(name, pattern.text)
    except ValueError:
        return None


def files_in_range(
    pattern: HistoryPattern, files: list[Path], since: datetime | None, until: datetime | None
) -> list[Path]:
    """Return the dated files, oldest first, that can hold lines of [since, until): none before its name's date.

    A file holds nothing from before the moment in its name, nor from after the next file's.
    """
    if not pattern.dated or (since is None and until is None):
        return files
    dates = [date_in_name(pattern, path) for path in files]
    kept = []
    for index, path in enumerate(files):
        start, end = dates[index], dates[index + 1] if index + 1 < len(files) else None
        if until is not None and start is not None and start >= until:
            continue
        if since is not None and end is not None and end <= since:
            continue
        kept.append(path)
    return kept


def is_gzipped(path: Path) -> bool:
    """Tell whether a history file is a gzipped one, by its name as we and logrotate make them."""
    return path.name.endswith(GZIP_SUFFIX)


def read_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Yield a history file's bytes in blocks of whole lines, each ending with a newline; raise FileError if unreadable.

    A .gz is decompressed as it is read, by zlib itself (GzipFile costs a third more); a damaged one raises FileError.
    """
    try:
        with open(path, "rb") as file:
            rest = b""
            for data in gunzip(file, block_bytes) if is_gzipped(path) else iter(lambda: file.read(block_bytes), b""):
                data = rest + data
                end = data.rfind(b"\n") + 1
                rest = data[end:]
                if end:
                    yield data[:end]
            if rest:
                yield rest + b"\n"  # an unfinished last line (a crash): read as if ended
    except (OSError, EOFError, zlib.error) as error:  # unreadable, or a damaged or truncated .gz
        raise unreadable(path, error) from error


def gunzip(file: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """Yield the decompressed data of a gzip file (of one member or more) at most block_bytes at a time."""
    unpack = zlib.decompressobj(GZIP_WBITS)
    pending = b""  # compressed bytes zlib has not taken yet
    between = True  # no member begun and not ended: the file may end here
    while True:
        if not pending:
            pending = file.read(READ_BYTES)
            if not pending:
                if not between:
                    raise EOFError("the compressed file is cut short")
                return
        if between:
            pending = pending.lstrip(b"\0")  # the zeros some tools pad a file with
            if not pending:
                continue
        between = False
        data = unpack.decompress(pending, block_bytes)
        pending = unpack.unconsumed_tail
        if data:
            yield data
        if unpack.eof:  # a member ends; another may follow (gzip a b > c)
            # What follows the member is all in unused_data (unconsumed_tail may hold a copy of it).
            pending, unpack, between = unpack.unused_data, zlib.decompressobj(GZIP_WBITS), True


class ReadAhead:
    """Reads the files' blocks on a thread, a few ahead of the caller, then (file, None) after each file's.

    zlib lets go of the interpreter while it decompresses, so a search takes about as long as the
    slower of the two, as zgrep's two processes do; a read error is raised to the caller, in order.
    """

    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._queue: queue.Queue[tuple[Path, bytes | None] | BaseException] = queue.Queue(maxsize=BLOCKS_AHEAD)
        self._stop = threading.Event()
        threading.Thread(target=self._read, name="archive reader", daemon=True).start()

    def _put(self, item: tuple[Path, bytes | None] | BaseException) -> bool:
        """Hand an item over; False once the caller has stopped taking them."""
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=HAND_OVER_SECONDS)
                return True
        return False

    def _read(self) -> None:
        try:
            for path in self._files:
                for block in read_blocks(path):
                    if not self._put((path, block)):
                        return
                self._put((path, None))
        except BaseException as error:  # handed over to the caller, whatever it is
            self._put(error)

    def __iter__(self) -> Iterator[tuple[Path, bytes | None]]:
        ended = 0
        try:
            while ended < len(self._files):
                item = self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                ended += item[1] is None
                yield item
        finally:
            self._stop.set()


def blocks_ahead(files: list[Path]) -> Iterator[tuple[Path, bytes | None]]:
    """Yield each file's blocks, then (file, None), read by a thread while the caller works."""
    return iter(ReadAhead(files))


def unreadable(path: Path, error: BaseException) -> FileError:
    """Return the error for a history file that cannot be read."""
    return FileError(f"cannot read history file {path}: {describe_error(error)}; check its permissions or remove it")


def search(files: list[Path], matcher: Matcher, write: Callable[[str], object]) -> int:
    """Print the matching lines of the files (and their context) as the history holds them; return how many matched."""
    context = matcher.query.context
    printer = ContextPrinter(context)
    found = 0
    for _, block in blocks_ahead(files):
        if block is None:
            printer.end_file()
            continue
        if context:
            hits = matcher.find(block)
            shown = printer.block(decode_block(block), hits)
        else:
            shown = matcher.find_lines(block)
        found += len(shown) if not context else len(hits)
        if shown:
            write("\n".join(shown) + "\n")
    return found


# What a note's line holds, looked for in the raw bytes: only those lines are read.
NOTE_MARKS = {"text": b" *** ", "jsonl": b'"event": '}


def history_events(files: list[Path], lines: HistoryLines, mark: bytes) -> Iterator[Event]:
    """Yield what the history says about the connection: each note, and the time of the line before it and the last."""
    before = b""  # the last line of the block before
    for _, block in blocks_ahead(files):
        if block is None:
            continue
        position = 0
        while (place := block.find(mark, position)) >= 0:
            start = block.rfind(b"\n", 0, place) + 1
            end = block.find(b"\n", place)
            entry = lines.entry(decode_block(block[start:end]))
            if entry.note:
                previous = block[block.rfind(b"\n", 0, start - 1) + 1 : start - 1] if start else before
                yield from timed_events(previous, lines)
                when = lines.time(entry)
                if when is not None:
                    yield event_of(entry, when)
            position = end + 1
        before = block[block.rfind(b"\n", 0, len(block) - 1) + 1 : -1]
    yield from timed_events(before, lines)


def timed_events(line: bytes, lines: HistoryLines) -> Iterator[Event]:
    """Yield the time of a line (only its time: a note's own event comes once, where it is read), if it has one."""
    if line:
        when = lines.time(lines.entry(decode_block(line)))
        if when is not None:
            yield Event(when, "line")


def report_coverage(files: list[Path], lines: HistoryLines, question: Question, write: Callable[[str], object]) -> int:
    """Print the spans the reader was connected and the gaps, then the totals; return the exit code."""
    coverage = Coverage()
    for event in history_events(files, lines, NOTE_MARKS[question.history_format]):
        coverage.feed(event)
    periods = clip(coverage.finish(datetime.now()), question.since, question.until)
    report = json_report if question.history_format == "jsonl" else text_report
    write("".join(line + "\n" for line in report(periods, lines.seconds)))
    return EXIT_OK


class Question(Protocol):
    """What the query modes are asked: read_client's settings."""

    history_format: str
    time_format: str
    search: str | None
    nick: str | None
    since: datetime | None
    until: datetime | None
    context: int
    coverage: bool


def answer(question: Question, pattern: HistoryPattern, write: Callable[[str], object]) -> int:
    """Answer --search or --coverage from every file of the history; return the exit code."""
    files = history_files(pattern)
    lines = make_lines(question.history_format, question.time_format)
    if question.search is None:
        return report_coverage(files, lines, question, write)
    query = Query(compile_pattern(question.search), question.nick, question.since, question.until, question.context)
    files = files_in_range(pattern, files, question.since, question.until)
    found = search(files, Matcher(query, lines), write)
    logger.info("%s in %s", plural(found, "matching line"), plural(len(files), "file"))
    return EXIT_OK
