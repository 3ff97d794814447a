"""The archive as the query modes read it: every file of a history, oldest first, plain or gzipped, in blocks."""

from __future__ import annotations

import contextlib
import gzip
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from _minechat.entries import make_lines
from _minechat.history import HistoryPattern
from _minechat.output import plural
from _minechat.search import ContextPrinter, Matcher, Query, compile_pattern, decode_block
from chat_io import EXIT_OK, FileError, describe_error

logger = logging.getLogger(__name__)

GZIP_SUFFIX = ".gz"
# How much of a file is decoded at a time: big enough that the per-block cost vanishes, small enough for memory.
BLOCK_BYTES = 4 * 1024 * 1024
# Blocks read ahead of the search: enough to keep the reading thread busy, few enough for memory.
BLOCKS_AHEAD = 2
HAND_OVER_SECONDS = 0.1  # how often a reading thread whose blocks nobody takes looks whether to stop


def history_files(pattern: HistoryPattern, now: datetime | None = None) -> list[Path]:
    """Return every file of the history, oldest first: rotated and dated ones, gzipped or not, then the current one."""
    current = Path(pattern.expand(now or datetime.now()))
    earlier = pattern.earlier_files(current)[::-1]
    if current.is_file():
        return [*earlier, current]
    return earlier


def is_gzipped(path: Path) -> bool:
    """Tell whether a history file is a gzipped one, by its name as we and logrotate make them."""
    return path.name.endswith(GZIP_SUFFIX)


def read_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Yield a history file's bytes in blocks of whole lines, each ending with a newline; raise FileError if unreadable.

    A .gz is decompressed as it is read; a damaged one raises FileError too.
    """
    try:
        file = gzip.open(path, "rb") if is_gzipped(path) else open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise unreadable(path, error) from error
    with file:
        rest = b""
        while True:
            try:
                data = file.read(block_bytes)
            except (OSError, EOFError, zlib.error) as error:  # a damaged or truncated .gz
                raise unreadable(path, error) from error
            if not data:
                break
            data = rest + data
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            if end:
                yield data[:end]
        if rest:
            yield rest + b"\n"  # an unfinished last line (a crash): read as if ended


def blocks_ahead(files: list[Path]) -> Iterator[tuple[Path, bytes | None]]:
    """Yield each file's blocks, then (file, None), read and decompressed by a thread while the caller works.

    zlib lets go of the interpreter while it decompresses, so a search takes about as long as the
    slower of the two, as zgrep's two processes do; a read error is raised here, in order.
    """
    ahead: queue.Queue[tuple[Path, bytes | None] | BaseException] = queue.Queue(maxsize=BLOCKS_AHEAD)
    stop = threading.Event()

    def put(item: tuple[Path, bytes | None] | BaseException) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ahead.put(item, timeout=HAND_OVER_SECONDS)
                return

    def read() -> None:
        try:
            for path in files:
                for block in read_blocks(path):
                    put((path, block))
                    if stop.is_set():
                        return
                put((path, None))
        except BaseException as error:  # handed over to the caller, whatever it is
            put(error)

    thread = threading.Thread(target=read, name="archive reader", daemon=True)
    thread.start()
    try:
        for _ in files:
            while True:
                item = ahead.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item[1] is None:
                    break
    finally:
        stop.set()


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


class Question(Protocol):
    """What the query modes are asked: read_client's settings."""

    history_format: str
    time_format: str
    search: str
    nick: str | None
    since: datetime | None
    until: datetime | None
    context: int


def answer(question: Question, pattern: HistoryPattern, write: Callable[[str], object]) -> int:
    """Answer --search from every file of the history; return the exit code."""
    files = history_files(pattern)
    lines = make_lines(question.history_format, question.time_format)
    query = Query(compile_pattern(question.search), question.nick, question.since, question.until, question.context)
    found = search(files, Matcher(query, lines), write)
    logger.info("%s in %s", plural(found, "matching line"), plural(len(files), "file"))
    return EXIT_OK
