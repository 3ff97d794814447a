"""--search (sans-IO): which lines of a block of history match a query, and which to print around them.

A block is whole lines of one file, each ending with a newline. The pattern is looked for in the
whole block first, as grep does, and only the lines it hits are read one by one: a month of bot
traffic costs little more than the regular expression's own scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from _minechat.entries import Entry, HistoryLines, JsonLines
from _minechat.view import NICK_SEPARATOR
from chat_io import ENCODING, sanitize_text

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


# Quantifiers: the character before one may be absent, so it is no part of the literal every match starts with.
_QUANTIFIERS = frozenset("?*{")
# Characters re.IGNORECASE takes for others beyond their upper and lower case (the Kelvin sign for k,
# the long s for s, the dotted I for i, Cyrillic and Greek variants): re's own table, where case_variants looks.
CASE_EXTRAS = (
    "is\u00b5\u0130\u0131\u017f\u0345\u0390\u03b0\u03b2\u03b5\u03b8\u03b9\u03ba\u03bc\u03c0\u03c1\u03c2\u03c3\u03c6"
    "\u03d0\u03d1\u03d5\u03d6\u03f0\u03f1\u03f4\u03f5\u0432\u0434\u043e\u0441\u0442\u044a\u0463\u1c80\u1c81"
    "\u1c82\u1c83\u1c84\u1c85\u1c86\u1c87\u1c88\u1e61\u1e9b\u1e9e\u1fbe\u1fd3\u1fe3\u2126\u212a\u212b\ua64b"
    "\ufb05\ufb06"
)
# Folds UTF-8 bytes so that a letter's cases become the same bytes: ASCII to lower case; Cyrillic and
# Greek by their second byte's low bits, with their lead bytes merged. Other characters fold together
# too, which only makes a line worth a closer look: each is matched by the regular expression after.
_CYRILLIC_LEADS, _GREEK_LEADS = (0xD0, 0xD1), (0xCE, 0xCF)
CASE_FOLD = bytes(
    byte + 32
    if 0x41 <= byte <= 0x5A
    else _CYRILLIC_LEADS[0]
    if byte in _CYRILLIC_LEADS
    else _GREEK_LEADS[0]
    if byte in _GREEK_LEADS
    else 0x80 | (byte & 0x0F)
    if 0x80 <= byte <= 0xBF
    else byte
    for byte in range(256)
)


def literal_prefix(source: str) -> str:
    """Return the literal text every match of a regular expression starts with ("" if none can be told)."""
    if "|" in source:
        return ""  # an alternative may start with anything
    for index, char in enumerate(source):
        if char in _SPECIAL:
            return source[: index - 1] if char in _QUANTIFIERS else source[:index]
    return source


def case_variants(char: str) -> set[str]:
    """Return every character re.IGNORECASE takes for char (char too)."""
    pool = {char, *CASE_EXTRAS}
    for change in (str.lower, str.upper, str.title, str.swapcase, str.casefold):
        pool.update(other for other in (change(char), *map(change, pool.copy())) if len(other) == 1)
    literal = re.compile(re.escape(char), re.IGNORECASE)
    return {other for other in pool if literal.fullmatch(other)}


@dataclass(frozen=True)
class Needle:
    """What every matching line holds, looked for in a block's bytes: found with bytes.find, not re."""

    data: bytes  # the literal start of the pattern, folded if the pattern ignores case
    fold: bool
    odd: tuple[bytes, ...] = ()  # cases of its letters that folding misses: a block holding one is read by re

    def misses(self, block: bytes) -> bool:
        """Tell whether a block may hold a case of the needle that folding misses; looks for their first bytes first."""
        return any(odd[:1] in block and odd in block for odd in self.odd)  # one byte: memchr, ten times faster


def needle_for(query: Query, lines: HistoryLines) -> Needle | None:
    """Return the needle of a query, or None if it has no literal start to look for."""
    prefix = literal_prefix(query.pattern.pattern)
    if not prefix:
        return None
    if isinstance(lines, JsonLines):
        # A record shows "nick: text" but holds the two apart: what spans the ": " is not in it as such.
        prefix = prefix.split(NICK_SEPARATOR.strip(), 1)[0].lstrip(" ")
        if not prefix or '"' in prefix or sanitize_text(prefix) != prefix:
            return None  # JSON escapes it: the record's raw text holds it otherwise
    data = prefix.encode(ENCODING)
    if not query.pattern.flags & re.IGNORECASE:
        return Needle(data, False)
    folded = data.translate(CASE_FOLD)
    odd = set()
    for char in prefix:
        own = char.encode(ENCODING).translate(CASE_FOLD)
        odd.update(
            case.encode(ENCODING) for case in case_variants(char) if case.encode(ENCODING).translate(CASE_FOLD) != own
        )
    return Needle(folded, True, tuple(sorted(odd)))


def regex_finder(query: Query, lines: HistoryLines) -> re.Pattern[str] | None:
    """Return the pattern to look for in a whole block of text lines; None where it would mean something else.

    JSON Lines escape quotes and backslashes, so there the pattern is only looked for line by line.
    """
    source = query.pattern.pattern
    if isinstance(lines, JsonLines) or _ANCHORS.search(source):
        return None
    return re.compile(source, query.pattern.flags | re.MULTILINE)


def decode_block(data: bytes) -> str:
    """Decode history bytes as the backlog does: damaged bytes become U+FFFD, NULs (a power cut's) are dropped."""
    text = data.decode(ENCODING, errors="replace")
    if "\0" in text:
        text = text.replace("\0", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


class Matcher:
    """Finds the lines of a block that match a query: chat lines only, never the reader's notes.

    A block is bytes of whole lines; only the lines worth a look are decoded, when the pattern has
    a literal start to look for.
    """

    def __init__(self, query: Query, lines: HistoryLines) -> None:
        self.query = query
        self._lines = lines
        self._needle = needle_for(query, lines)
        self._regex = regex_finder(query, lines)
        self._search = query.pattern.search

    def matches_line(self, line: str) -> bool:
        """Tell whether one line matches; a plain search reads no more of it than it must."""
        query = self.query
        if query.nick is None and not query.dated:
            shown = self._lines.chat_text(line)
            return shown is not None and self._search(shown) is not None
        return self.matches(self._lines.entry(line))

    def matches(self, entry: Entry) -> bool:
        """Tell whether one line matches."""
        query = self.query
        if entry.note:
            return False
        if query.nick is not None and entry.nick != query.nick:
            return False
        if query.dated and not in_range(self._lines.time(entry), query.since, query.until):
            return False
        return query.pattern.search(entry.shown) is not None

    def find(self, block: bytes) -> list[int]:
        """Return the numbers (from 0) of a block's matching lines."""
        return [index for index, _ in self._scan(block, count=True)]

    def find_lines(self, block: bytes) -> list[str]:
        """Return a block's matching lines, decoded."""
        return [line for _, line in self._scan(block, count=False)]

    def _scan(self, block: bytes, count: bool) -> list[tuple[int, str]]:
        needle = self._needle
        if needle is not None and not needle.misses(block):
            return self._scan_needle(block, needle, count)
        text = decode_block(block)
        if self._regex is not None:
            return self._scan_regex(text, self._regex, count)
        return [(index, line) for index, line in enumerate(text[:-1].split("\n")) if self.matches_line(line)]

    def _scan_needle(self, block: bytes, needle: Needle, count: bool) -> list[tuple[int, str]]:
        """Read only the lines that hold the needle, as grep does."""
        haystack = block.translate(CASE_FOLD) if needle.fold else block
        matches = self.matches_line
        hits = []
        position = counted = index = 0
        while True:
            place = haystack.find(needle.data, position)
            if place < 0:
                return hits
            start = block.rfind(b"\n", 0, place) + 1
            end = block.find(b"\n", place)
            if count:
                index += block.count(b"\n", counted, start)
                counted = start
            line = block[start:end].decode(ENCODING, errors="replace")
            if "\0" in line or line.endswith("\r"):
                line = line.replace("\0", "").removesuffix("\r")
            if matches(line):
                hits.append((index, line))
            position = end + 1

    def _scan_regex(self, text: str, regex: re.Pattern[str], count: bool) -> list[tuple[int, str]]:
        """Read only the lines where the pattern is found in the whole text, as grep does."""
        hits = []
        position = counted = index = 0
        while True:
            found = regex.search(text, position)
            if found is None:
                return hits
            start = text.rfind("\n", 0, found.start()) + 1
            end = text.find("\n", found.start())
            if end < 0:  # a match of the line break itself at the very end
                return hits
            if count:
                index += text.count("\n", counted, start)
                counted = start
            line = text[start:end]
            if self.matches_line(line):
                hits.append((index, line))
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
