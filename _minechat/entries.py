"""What a line of the history says, read back (sans-IO): when it was stamped, whether it is a note, what it shows."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from _minechat.backlog import stamp_shape
from _minechat.jsonl import parse_cut_record, parse_record
from _minechat.stamping import DEFAULT_TIME_FORMAT
from _minechat.view import NICK_SEPARATOR
from chat_io import STATUS_MARK, sanitize_text

NOTE_START = f"{STATUS_MARK} "
# Distinct stamps remembered with their times: a minute's stamp repeats on every line of the minute.
TIME_CACHE_SIZE = 4096


class Entry(NamedTuple):
    """One line of the history as the query modes see it."""

    stamp: str  # the stamp as written ("" if none): HistoryLines.time() reads it when a query needs it
    note: bool  # the reader's own note (*** in text, a record with an event in JSON Lines)
    shown: str  # what the reader shows after the stamp: "nick: text", or a note's text
    nick: str | None
    record: dict[str, object] | None = None  # the JSON Lines record, for a note's event and details


def local_time(text: str) -> datetime | None:
    """Return an ISO 8601 time as local time without an offset, or None if it is not one."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone().replace(tzinfo=None) if when.tzinfo is not None else when


def split_nick(shown: str) -> str | None:
    """Return the nickname a chat line starts with, or None if it has none."""
    nick, separator, _ = shown.partition(NICK_SEPARATOR)
    return nick if separator else None


class TextLines:
    """Reads lines of the text history: the stamp of --time-format (or the seed's), then the line or *** and a note."""

    def __init__(self, time_format: str = DEFAULT_TIME_FORMAT) -> None:
        formats = dict.fromkeys((time_format, DEFAULT_TIME_FORMAT))  # a history begun with the default
        self._shapes = [stamp_shape(each) for each in formats]
        self._formats = list(formats)
        self._times: dict[str, datetime | None] = {}
        # Stamps show minutes unless the format has seconds; said in --coverage's output.
        self.seconds = "%S" in time_format or "%T" in time_format or "%s" in time_format

    def entry(self, line: str) -> Entry:
        """Return what a line says."""
        for shape in self._shapes:
            match = shape.match(line)
            if match is not None:
                end = match.end()
                if line.startswith(NOTE_START, end):
                    return Entry(line[: end - 1], True, line[end + len(NOTE_START) :], None)
                shown = line[end:]
                return Entry(line[: end - 1], False, shown, split_nick(shown))
        return Entry("", False, line, split_nick(line))

    def chat_text(self, line: str) -> str | None:
        """Return what a chat line shows after its stamp, or None for a note."""
        for shape in self._shapes:
            match = shape.match(line)
            if match is not None:
                end = match.end()
                return None if line.startswith(NOTE_START, end) else line[end:]
        return line

    def time(self, entry: Entry) -> datetime | None:
        """Return the local time a line's stamp shows, or None if it shows none (a format without a date)."""
        stamp = entry.stamp
        if stamp in self._times:
            return self._times[stamp]
        when = None
        for time_format in self._formats:
            try:
                when = datetime.strptime(stamp, time_format)
            except ValueError:
                continue
            if when.tzinfo is not None:
                when = when.astimezone().replace(tzinfo=None)
            break
        if len(self._times) >= TIME_CACHE_SIZE:
            self._times.clear()
        self._times[stamp] = when
        return when


class JsonLines:
    """Reads lines of the JSON Lines history: chat records, and notes with an "event"."""

    seconds = True

    def __init__(self, time_format: str = DEFAULT_TIME_FORMAT) -> None:
        self._text = TextLines(time_format)  # a line that is no record (a damaged one) is read as text
        self._times: dict[str, datetime | None] = {}

    def entry(self, line: str) -> Entry:
        """Return what a line says; a chat record shows as the reader shows it, escaped."""
        record = parse_record(line)
        if record is None and line.startswith("{"):
            record = parse_cut_record(line)  # a record cut short (a crash): its text so far
        if record is None:
            return self._text.entry(line)
        stamp = str(record["time"])
        text = str(record["text"])
        if "event" in record:
            return Entry(stamp, True, sanitize_text(text), None, record)
        nick = record.get("nick")
        if isinstance(nick, str):
            return Entry(stamp, False, sanitize_text(f"{nick}{NICK_SEPARATOR}{text}"), sanitize_text(nick), record)
        return Entry(stamp, False, sanitize_text(text), None, record)

    def chat_text(self, line: str) -> str | None:
        """Return what a chat record shows, or None for a note."""
        entry = self.entry(line)
        return None if entry.note else entry.shown

    def time(self, entry: Entry) -> datetime | None:
        """Return a line's time as local time, remembering the last ones."""
        if entry.record is None:
            return self._text.time(entry)
        stamp = entry.stamp
        if stamp not in self._times:
            if len(self._times) >= TIME_CACHE_SIZE:
                self._times.clear()
            self._times[stamp] = local_time(stamp)
        return self._times[stamp]


HistoryLines = TextLines | JsonLines


def make_lines(history_format: str, time_format: str) -> HistoryLines:
    """Return the reader of a history format ("text" or "jsonl")."""
    return JsonLines(time_format) if history_format == "jsonl" else TextLines(time_format)
