"""--search (sans-IO): which lines of a block of history match a query, and which to print around them.

A block is whole lines of one file, each ending with a newline. The pattern is looked for in the
whole block first, as grep does, and only the lines it hits are read one by one: a month of bot
traffic costs little more than the regular expression's own scan.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from _minechat.entries import Entry, HistoryLines, JsonLines

# What a regular expression holds that makes it mean something else in a block than in one line's text.
_ANCHORS = re.compile(r"\^|\\A|\\Z|\(\?<|\(\?[a-zA-Z]*[ms]")
_ESCAPE = re.compile(r"\\.")
_SPECIAL = frozenset(".^$*+?{}[]\\|()")
GROUP_SEPARATOR = "--"  # between groups of lines printed with --context, as grep -C prints it


def compile_pattern(text: str) -> re.Pattern[str]:
    """Compile a search pattern: case-insensitive unless it has an upper-case letter (escapes such as \\S aside)."""
    flags = 0 if any(char.isupper() for char in _ESCAPE.sub("", text)) else re.IGNORECASE
    return re.compile(text, flags)


@dataclass(frozen=True)
class Query:
    """What --search asks: a pattern, perhaps a nickname and a time range, and how much context."""

    pattern: re.Pattern[str]
    nick: str | None = None
    since: datetime | None = None  # local time, the first moment in range
    until: datetime | None = None  # local time, the first moment past the range
    context: int = 0

    @property
    def dated(self) -> bool:
        """Tell whether only lines within a time range count."""
        return self.since is not None or self.until is not None


def in_range(when: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    """Tell whether a moment lies in [since, until); a line without one lies in no range."""
    if since is None and until is None:
        return True
    if when is None:
        return False
    return (since is None or when >= since) and (until is None or when < until)


def prefilter_for(query: Query, lines: HistoryLines) -> re.Pattern[str] | None:
    """Return what a line must hold, found in the whole block, for it to be worth reading; None: read every line.

    In text the pattern itself does, unless anchors would make it mean something else in a block.
    JSON Lines escape quotes and backslashes, so there only a pattern of plain characters can be looked for raw.
    """
    source = query.pattern.pattern
    if isinstance(lines, JsonLines):
        if any(char in _SPECIAL or char == '"' for char in source):
            return None
        return re.compile(re.escape(source), query.pattern.flags)
    if _ANCHORS.search(source):
        return None
    return re.compile(source, query.pattern.flags | re.MULTILINE)


class Matcher:
    """Finds the lines of a block that match a query: chat lines only, never the reader's notes."""

    def __init__(self, query: Query, lines: HistoryLines) -> None:
        self.query = query
        self._lines = lines
        self._prefilter = prefilter_for(query, lines)

    def matches(self, entry: Entry) -> bool:
        """Tell whether one line matches."""
        query = self.query
        if entry.note:
            return False
        if query.nick is not None and entry.nick != query.nick:
            return False
        if query.dated and not in_range(entry.time, query.since, query.until):
            return False
        return query.pattern.search(entry.shown) is not None

    def find(self, block: str) -> list[int]:
        """Return the numbers (from 0) of a block's matching lines."""
        if self._prefilter is None:
            entry = self._lines.entry
            return [index for index, line in enumerate(block[:-1].split("\n")) if self.matches(entry(line))]
        return self._find_by_scan(block, self._prefilter.search)

    def _find_by_scan(self, block: str, search: Callable[[str, int], re.Match[str] | None]) -> list[int]:
        hits = []
        entry = self._lines.entry
        position = counted = index = 0
        while True:
            found = search(block, position)
            if found is None:
                return hits
            start = block.rfind("\n", 0, found.start()) + 1
            end = block.find("\n", found.start())
            if end < 0:  # a match of the line break itself at the very end
                return hits
            index += block.count("\n", counted, start)
            counted = start
            if self.matches(entry(block[start:end])):
                hits.append(index)
            position = end + 1


class ContextPrinter:
    """Picks the lines to print around matches, as grep -C does: groups of lines, -- between groups.

    Blocks of one file come one after the other; lines before a match may lie in the block before,
    lines after it in the next one. A file's end closes its last group.
    """

    def __init__(self, context: int) -> None:
        self._context = context
        self._base = 0  # the number of the block's first line among all lines read
        self._file_start = 0  # context never reaches into the file before
        self._printed_end = 0  # one past the last line printed
        self._owed = 0  # lines after the last match are printed up to here
        self._tail: list[str] = []  # the last lines of the blocks before, for context before a match
        self._printed = False

    def block(self, text: str, hits: list[int]) -> list[str]:
        """Return what to print of a block, given its matching lines' numbers."""
        count = text.count("\n")
        if not hits and self._owed <= self._base:
            self._remember_tail(text, count)
            self._base += count
            return []
        lines = text[:-1].split("\n")
        out: list[str] = []
        spans = [(self._base, self._owed)] if self._owed > self._base else []
        spans += [(self._base + hit - self._context, self._base + hit + self._context + 1) for hit in hits]
        for first, end in spans:
            self._print(out, lines, first, end)
        if self._context:
            self._tail = (self._tail + lines[-self._context :])[-self._context :]
        self._base += count
        return out

    def _print(self, out: list[str], lines: list[str], first: int, end: int) -> None:
        first = max(first, self._file_start, self._printed_end)
        if first >= end:
            return
        if self._context and self._printed and first > self._printed_end:
            out.append(GROUP_SEPARATOR)
        last = min(end, self._base + len(lines))
        for number in range(first, last):
            index = number - self._base
            out.append(lines[index] if index >= 0 else self._tail[index])
        self._printed = True
        self._printed_end = max(self._printed_end, last)
        self._owed = max(self._owed, end)

    def _remember_tail(self, text: str, count: int) -> None:
        if not self._context:
            return
        last = text[:-1].rsplit("\n", self._context)[-self._context :] if count else []
        self._tail = (self._tail + last)[-self._context :]

    def end_file(self) -> None:
        """Close the file: what follows is another file, never context of this one."""
        self._base += 1  # a line that is in no file: the next file's first group is apart
        self._file_start = self._base
        self._owed = 0
        self._tail = []
