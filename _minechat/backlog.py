"""Reading the history back: the last chat lines, from the end of its files, without the notes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from _minechat.history import GZIP_SUFFIX, HistoryFile, format_status
from _minechat.jsonl import parse_cut_record, parse_record
from _minechat.stamping import DEFAULT_TIME_FORMAT, StampClock, format_stamp
from _minechat.view import NICK_SEPARATOR
from chat_io import ENCODING, MAX_LINE_BYTES, NEWLINE, STATUS_MARK, describe_error, plural, sanitize_text, utf8_cut

logger = logging.getLogger(__name__)

BACKLOG_BLOCK_BYTES = 64 * 1024
# A backlog line longer than this is shown cut, with CUT_MARK; the history keeps it whole.
BACKLOG_LINE_BYTES = MAX_LINE_BYTES
CUT_MARK = " [...]"
# All backlog lines together are at most this long; older lines past it are left out.
BACKLOG_TOTAL_CHARS = 4 * 1024 * 1024


def lines_from_end(
    file: BinaryIO,
    block_size: int = BACKLOG_BLOCK_BYTES,
    limit: int = BACKLOG_LINE_BYTES,
    stop: threading.Event | None = None,
) -> Iterator[tuple[bytes, bool]]:
    """Yield a file's non-empty lines, last first, reading blocks back from its end; cut to limit bytes (then True).

    Lines are split at newline bytes before anything is decoded, so a character cut at a block's
    edge is whole again in its line; memory stays within a block and a line's first limit bytes.
    """
    position = file.seek(0, os.SEEK_END)
    partial = b""  # the line that began before position: the first limit bytes seen of it
    cut = False
    while position > 0:
        if stop is not None and stop.is_set():
            return  # given up (Ctrl-C): a block at most after it was asked
        start = max(0, position - block_size)
        file.seek(start)
        block = file.read(position - start)
        if b"\0" in block:
            # Never written by us (chat's NULs are escaped): what a power cut leaves of appended blocks.
            block = block.replace(b"\0", b"")
        data = block + partial
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


def stamp_pieces(time_format: str) -> str:
    """Return a pattern (text) for a stamp of time_format: the stamp's shape, whatever the moment."""
    sample = datetime.now().astimezone().strftime(time_format)
    pieces = []
    for token in re.findall(r"\d+|[^\W\d_]+|\s+|.", sample):
        if re.fullmatch(r"\d+", token):
            pieces.append(r"\s*\d+")  # a space-padded field (%e, %k, %l) has one digit or two
        elif re.fullmatch(r"[^\W\d_]+", token):
            pieces.append(r"[^\W\d_]+")  # names of months, days, zones, AM and PM
        elif token.isspace():
            pieces.append(r"\s*")  # padding of a field that has two digits now, or separation
        elif token in "+-":
            pieces.append("[+-]")  # a UTC offset's sign
        else:
            pieces.append(re.escape(token))
    return "".join(pieces)


def status_shape(time_format: str) -> re.Pattern[str]:
    """Return a pattern for a text status line stamped with time_format: the stamp's shape, then ***."""
    return re.compile(stamp_pieces(time_format) + re.escape(f" {STATUS_MARK} "))


def stamp_shape(time_format: str) -> re.Pattern[str]:
    """Return a pattern for the stamp of a chat line stamped with time_format, and the space after it."""
    return re.compile(stamp_pieces(time_format) + " ")


def cut_shown(line: str, cut: bool) -> str:
    """Escape a backlog line and cut it to BACKLOG_LINE_BYTES as shown: an escape is four characters, not one."""
    safe = sanitize_text(line)
    if len(safe) > BACKLOG_LINE_BYTES:
        safe, cut = safe[:BACKLOG_LINE_BYTES], True
    return safe + (CUT_MARK if cut else "")


def show_record(record: dict[str, object], time_format: str) -> str:
    """Return a chat record as a text line, stamped with time_format."""
    try:
        stamp = format_stamp(datetime.fromisoformat(str(record["time"])), time_format)
    except ValueError:
        stamp = str(record["time"])
    nick = record.get("nick")
    text = f"{nick}{NICK_SEPARATOR}{record['text']}" if isinstance(nick, str) else str(record["text"])
    return f"{stamp} {text}"


def open_history(path: Path) -> BinaryIO:
    """Open a history file to read it back from its end; a gzipped one is decompressed into memory first."""
    if not path.name.endswith(GZIP_SUFFIX):
        return open(path, "rb")
    import gzip  # here: only a history with compressed files needs it
    import io

    with gzip.open(path, "rb") as file:
        return io.BytesIO(file.read())


# How a view shows a chat line's text (after its stamp), or None to leave the line out.
View = Callable[[str], str | None]


def apply_view(line: str, stamps: list[re.Pattern[str]], view: View) -> str | None:
    """Return a shown line as the view has it: its stamp kept, its text (from the nickname on) judged."""
    for stamp in stamps:
        match = stamp.match(line)
        if match is not None:
            text = view(line[match.end() :])
            return None if text is None else line[: match.end()] + text
    return view(line)


def backlog_lines(
    paths: Iterable[Path], time_format: str, stop: threading.Event | None = None, view: View | None = None
) -> Iterator[str]:
    """Yield the chat lines of history files (of either format), last first, as stdout shows them; no notes.

    A view leaves out lines or marks them (see apply_view).
    """
    shapes = [status_shape(time_format), status_shape(DEFAULT_TIME_FORMAT)]
    stamps = [stamp_shape(time_format), stamp_shape(DEFAULT_TIME_FORMAT)] if view is not None else []
    for path in paths:
        try:
            file = open_history(path)
        except FileNotFoundError:
            continue
        with file:
            for raw, cut in lines_from_end(file, stop=stop):
                line = raw.decode(ENCODING, errors="replace").removesuffix("\r")
                record = parse_record(line) if not cut else parse_cut_record(line)
                if record is not None:
                    if "event" in record:
                        continue
                    line = show_record(record, time_format)
                elif any(shape.match(line) for shape in shapes):
                    continue
                shown: str | None = cut_shown(line, cut)
                if view is not None:
                    shown = apply_view(shown, stamps, view)
                if shown is not None:
                    yield shown


def read_backlog(
    paths: Iterable[Path], count: int, time_format: str, stop: threading.Event | None = None, view: View | None = None
) -> list[str]:
    """Return the last count chat lines of the history, oldest first, within BACKLOG_TOTAL_CHARS; stop ends early.

    Lines a view leaves out do not count.
    """
    found: list[str] = []
    size = 0
    for line in backlog_lines(paths, time_format, stop, view):
        size += len(line) + 1
        if len(found) == count or size > BACKLOG_TOTAL_CHARS:
            break
        found.append(line)
    return found[::-1]


async def show_backlog(
    history: HistoryFile,
    count: int,
    time_format: str,
    show: Callable[[str], object],
    clock: StampClock,
    view: View | None = None,
) -> None:
    """Show the last chat lines of the history, then a status line that marks where live chat begins."""

    stop = threading.Event()  # the scan runs in a thread, which a cancellation cannot reach otherwise

    def read() -> list[str]:
        paths = [history.path, *history.pattern.earlier_files(history.path)]
        return read_backlog(paths, count, time_format, stop, view)

    try:
        lines = await asyncio.to_thread(read)
    except asyncio.CancelledError:
        stop.set()  # so the thread ends now, not after the whole history: asyncio.run waits for it
        raise
    except Exception as error:  # the backlog is a courtesy: a damaged history must not keep us from the chat
        logger.warning("cannot show the backlog: %s", describe_error(error))
        return
    if lines:
        what = f"the last {plural(len(lines), 'chat line')} of the history"
        show("".join(line + "\n" for line in lines) + format_status(clock.fresh(), f"{what}; live chat follows"))
