"""The archive as the query modes read it: every file of a history, oldest first, plain or gzipped, in blocks."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from _minechat.entries import make_lines
from _minechat.history import HistoryPattern
from _minechat.output import plural
from _minechat.search import ContextPrinter, Matcher, Query, compile_pattern
from chat_io import ENCODING, EXIT_OK, FileError, describe_error

logger = logging.getLogger(__name__)

GZIP_SUFFIX = ".gz"
# How much of a file is decoded at a time: big enough that the per-block cost vanishes, small enough for memory.
BLOCK_BYTES = 4 * 1024 * 1024


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


def read_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """Yield a history file's text in blocks of whole lines, each ending with a newline; raise FileError if unreadable.

    A NUL run (what a power cut leaves of appended blocks) is dropped, as the backlog drops it.
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
                yield decode(data[:end])
        if rest:
            yield decode(rest + b"\n")  # an unfinished last line (a crash): read as if ended


def decode(data: bytes) -> str:
    """Decode history bytes as the backlog does: damaged bytes become U+FFFD, NULs are dropped."""
    text = data.decode(ENCODING, errors="replace")
    if "\0" in text:
        text = text.replace("\0", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def unreadable(path: Path, error: BaseException) -> FileError:
    """Return the error for a history file that cannot be read."""
    return FileError(f"cannot read history file {path}: {describe_error(error)}; check its permissions or remove it")


def search(files: list[Path], matcher: Matcher, write: Callable[[str], object]) -> int:
    """Print the matching lines of the files (and their context) as the history holds them; return how many matched."""
    printer = ContextPrinter(matcher.query.context)
    found = 0
    for path in files:
        for block in read_blocks(path):
            hits = matcher.find(block)
            found += len(hits)
            shown = printer.block(block, hits)
            if shown:
                write("\n".join(shown) + "\n")
        printer.end_file()
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
