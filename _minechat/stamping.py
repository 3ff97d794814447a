"""The reader's sans-IO core: the clock, and stampers that turn received bytes into history text."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

from _minechat.view import Mark, Verdict, ViewRules
from chat_io import ENCODING, MAX_LINE_BYTES, NEWLINE, STATUS_MARK, sanitize_block, sanitize_text, utf8_cut

# The two history formats (--format): text lines, or JSON Lines.
TEXT_FORMAT = "text"
JSONL_FORMAT = "jsonl"
# The seed's stamp, [DD.MM.YY HH:MM]; --time-format changes it.
DEFAULT_TIME_FORMAT = "[%d.%m.%y %H:%M]"
# The one strftime field finer than a second: a format that holds it is formatted for every chunk.
SUBSECOND_FIELD = "f"


def format_stamp(when: datetime, time_format: str = DEFAULT_TIME_FORMAT) -> str:
    """Return the history prefix for a moment: [DD.MM.YY HH:MM], or as time_format says."""
    return when.strftime(time_format)


def split_strftime(pattern: str) -> list[tuple[str, bool]]:
    """Split a strftime pattern into (literal text, False) and (field letter, True); raise ValueError on a lone %."""
    parts: list[tuple[str, bool]] = []
    literal = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char != "%":
            literal.append(char)
            position += 1
            continue
        if position + 1 == len(pattern):
            raise ValueError("it ends with a lone %; a literal % is written %%")
        field = pattern[position + 1]
        position += 2
        if field == "%":
            literal.append("%")
            continue
        if literal:
            parts.append(("".join(literal), False))
            literal = []
        parts.append((field, True))
    if literal:
        parts.append(("".join(literal), False))
    return parts


def has_subsecond_field(time_format: str) -> bool:
    """Tell whether a strftime format shows fractions of a second (%f), so it cannot be kept for a second."""
    try:
        return any(is_field and text == SUBSECOND_FIELD for text, is_field in split_strftime(time_format))
    except ValueError:
        return False


class Moment(NamedTuple):
    """One moment as the history writes it."""

    stamp: str  # the stamp of --time-format, for text lines and stdout
    iso: str  # ISO 8601 local time with seconds and UTC offset, for JSON records
    path: str  # the history file that holds what arrives at this moment


class StampClock:
    """Formats the current moment for the history: once a second, since strftime is slow next to a chunk.

    A time format with %f is formatted on every call, so all lines of one received chunk share a stamp.
    """

    def __init__(
        self,
        time_format: str = DEFAULT_TIME_FORMAT,
        expand_path: Callable[[datetime], str] = lambda when: "",
        now: Callable[[], float] = time.time,
    ) -> None:
        self._time_format = time_format
        self._expand_path = expand_path
        self._now = now
        self._every_call = has_subsecond_field(time_format)
        self._cached: tuple[int, Moment] | None = None  # one attribute, replaced whole: safe to read from a thread

    def read(self) -> Moment:
        """Return the current moment, formatted at most once a second."""
        now = self._now()
        if self._every_call:
            return self.at(now)
        second = int(now // 1)
        cached = self._cached
        if cached is None or cached[0] != second:
            # Formatted from the whole second, so every call within it gets the same text.
            cached = (second, self.at(second))
            self._cached = cached
        return cached[1]

    def fresh(self) -> Moment:
        """Return the current moment, formatted now (for rare notes, from any thread)."""
        return self.at(self._now())

    def at(self, timestamp: float) -> Moment:
        """Format a moment given in seconds since the epoch, in local time."""
        # Imported here: read_client's --help takes this module's constants only, and datetime costs it 2%.
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(timestamp, timezone.utc).astimezone()  # right offset in a DST fold too
        return Moment(when.strftime(self._time_format), when.isoformat(timespec="seconds"), self._expand_path(when))


def stamp_following_lines(block: bytes, prefix: str, first_starts_line: bool = True) -> str:
    """Decode and escape a block of complete lines, with prefix before every line but the first."""
    text = block.decode(ENCODING, errors="replace").replace("\r\n", "\n")
    text = unmark_lines(sanitize_block(text), first_starts_line)
    return text[:-1].replace("\n", "\n" + prefix) + "\n"


# How a chat line that begins with the notes' mark is written: its first * escaped, as control characters are.
ESCAPED_MARK = "\\x2a" + STATUS_MARK[1:]


def unmark_lines(text: str, first_starts_line: bool) -> str:
    """Escape the first * of each line that begins with ***, so no chat line reads as one of our notes."""
    if STATUS_MARK not in text:
        return text
    text = text.replace("\n" + STATUS_MARK, "\n" + ESCAPED_MARK)
    if first_starts_line and text.startswith(STATUS_MARK):
        text = ESCAPED_MARK + text[len(STATUS_MARK) :]
    return text


class LineStamper:
    """Turn received bytes into history text: one stamp per line, however long the line.

    A line longer than max_piece is passed on in pieces as it arrives, with no line break
    between them, so memory stays bounded and nobody can pad a message into a forged line.
    """

    def __init__(self, max_piece: int = MAX_LINE_BYTES) -> None:
        self._max_piece = max_piece
        self._buffer = bytearray()
        self._continued = False  # the text given out so far ends inside a line
        self.completed = False  # at least one whole line has been given out

    def feed(self, data: bytes, stamp: str) -> str:
        """Take received bytes; return the history text for what they complete."""
        if self._buffer:
            self._buffer += data
            end = self._buffer.rfind(NEWLINE)
            block = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
        else:
            end = data.rfind(NEWLINE)
            block = data[: end + 1]
            self._buffer = bytearray(data[end + 1 :])
        text = ""
        if block:
            text = self._format_block(block, stamp)
            self._continued = False
            self.completed = True
        if len(self._buffer) > self._max_piece:
            text += self._give_pieces(stamp)
        return text

    @property
    def continued(self) -> bool:
        """Tell whether the text given out so far ends inside a line."""
        return self._continued

    def flush(self, stamp: str) -> str:
        """Return the unfinished last line, ended with a newline, and forget it."""
        if not self._buffer and not self._continued:
            return ""
        text = self._format_end(bytes(self._buffer), stamp)
        self._buffer.clear()
        self._continued = False
        return text

    def _start(self, stamp: str) -> str:
        return "" if self._continued else stamp + " "

    def _format_block(self, block: bytes, stamp: str) -> str:
        """Format complete lines (the first may end a line begun earlier)."""
        return self._start(stamp) + stamp_following_lines(block, stamp + " ", not self._continued)

    def _format_piece(self, raw: bytes, stamp: str) -> str:
        """Format part of a line that goes on (it may begin the line)."""
        return self._start(stamp) + unmark_lines(_escape_piece(raw), not self._continued)

    def _format_end(self, raw: bytes, stamp: str) -> str:
        """Format the last part of a line and end it."""
        return self._format_piece(raw, stamp) + "\n"

    def _give_pieces(self, stamp: str) -> str:
        """Give out all but the last max_piece bytes of the unfinished line, cut between characters."""
        pieces = []
        while len(self._buffer) > self._max_piece:
            # The last byte always stays held, so a CR waiting for its LF is never given out alone.
            cut = utf8_cut(self._buffer, self._max_piece)
            pieces.append(self._format_piece(bytes(self._buffer[:cut]), stamp))
            del self._buffer[:cut]
            self._continued = True
        return "".join(pieces)


class ViewStamper(LineStamper):
    """Turn received bytes into the text stdout shows: lines of ignored nicknames left out, lines to mark marked.

    A line given in pieces (longer than max_piece) is judged by its first piece, and rings at most once.
    """

    def __init__(self, rules: ViewRules, mark: Mark, max_piece: int = MAX_LINE_BYTES) -> None:
        super().__init__(max_piece)
        self._rules = rules
        self._mark = mark
        self._hiding = False  # the line given out in pieces is hidden
        self.hidden = 0  # lines left out so far
        self._rung = False  # the line given out in pieces has rung the bell

    def _format_block(self, block: bytes, stamp: str) -> str:
        text = sanitize_block(block.decode(ENCODING, errors="replace").replace("\r\n", "\n"))
        shown = ""
        if self._continued:  # the first line ends one given out in pieces
            end = text.index("\n")
            if not self._hiding:
                shown = self._format_rest(text[:end]) + "\n"
            self._hiding = self._rung = False
            text = text[end + 1 :]
        text, hidden = self._rules.drop_hidden(text)
        self.hidden += hidden
        if not text:
            return shown
        pieces = []
        done = 0
        for start, end in self._rules.marked_spans(text):
            pieces += (text[done:start], self._mark(text[start:end], True))
            done = end
        pieces.append(text[done:])
        text = "".join(pieces)  # a mark adds no line break: each line gets its stamp below
        prefix = stamp + " "
        return shown + prefix + text[:-1].replace("\n", "\n" + prefix) + "\n"

    def _format_rest(self, text: str) -> str:
        """Format a later piece of a line given in pieces that is shown."""
        if not self._rules.marks(text):
            return text
        ring, self._rung = not self._rung, True
        return self._mark(text, ring)

    def _format_piece(self, raw: bytes, stamp: str) -> str:
        text = _escape_piece(raw)
        if self._continued:
            return "" if self._hiding else self._format_rest(text)
        verdict = self._rules.judge(text)
        self._hiding = verdict is Verdict.HIDE
        self._rung = verdict is Verdict.MARK
        if verdict is Verdict.HIDE:
            self.hidden += 1
            return ""
        return stamp + " " + (self._mark(text, True) if verdict is Verdict.MARK else text)

    def _format_end(self, raw: bytes, stamp: str) -> str:
        text = self._format_piece(raw, stamp)
        hidden, self._hiding, self._rung = self._hiding, False, False
        return "" if hidden else text + "\n"


def escape_note(text: str) -> str:
    """Escape a note's text, which may quote a path or a host: it must not make a line of its own."""
    return sanitize_text(text)


def _escape_piece(raw: bytes) -> str:
    """Decode and escape part of one line."""
    return sanitize_text(raw.decode(ENCODING, errors="replace"))
