"""--coverage (sans-IO): the reader's notes, in order, turned into spans it was connected and the gaps between.

Every connection event is in the history: "connecting", "connected", a lost connection with its
error, a try that failed, a stop by a signal, a full disk's pause. A reader that died without a
word (killed, a power cut) left none: its span ends at its last line, and the next start says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from _minechat.entries import Entry, local_time

CONNECTED = "connected"
GAP = "gap"
# What a gap is put down to when the history says no more.
STARTING = "starting: connecting"
DIED = "the reader ended without a note (killed, crashed, or the machine stopped)"
NOT_RUNNING = "no reader was running"
DISK_FULL = "the disk was full: the chat was not read"
STALLED = "the history could not be written: the chat was not read"
# The notes of a pause in writing, with its start and end: the chat was held, not read, meanwhile.
PAUSES = {"disk_full": DISK_FULL, "stalled": STALLED}

# The notes of the text history, as read_client writes them (JSON Lines name their event instead).
_TEXT_NOTES = [
    ("connecting", re.compile(r"connecting to ")),
    ("connected", re.compile(r"connected to ")),
    ("lost", re.compile(r"connection lost: (?P<error>.*); next try in [\d.]+ s$")),
    ("stopped", re.compile(r"stopped by (?P<signal>\S+)$")),
    ("disk_full", re.compile(r"disk was full from (?P<since>\S+) to (?P<until>\S+?);")),
    ("stalled", re.compile(r"history could not be written from (?P<since>\S+) to (?P<until>\S+?);")),
    ("retrying", re.compile(r"(?P<error>.*); next try in [\d.]+ s$")),
]


class Event(NamedTuple):
    """One thing the history says about the connection, at a moment; "line" is any line, for its time."""

    time: datetime
    kind: str  # connecting, connected, lost, retrying, stopped, disk_full, line
    reason: str = ""
    since: datetime | None = None  # disk_full: when the disk filled up
    until: datetime | None = None  # disk_full: when there was room again


def event_of(entry: Entry, when: datetime) -> Event:
    """Return what a line of the history says about the connection ("line" if nothing)."""
    if not entry.note:
        return Event(when, "line")
    record = entry.record
    if record is not None:
        return event_of_record(record, when)
    for kind, shape in _TEXT_NOTES:
        match = shape.match(entry.shown)
        if match is None:
            continue
        found = match.groupdict()
        if kind in PAUSES:
            return Event(when, kind, since=local_time(found["since"]), until=local_time(found["until"]))
        if kind == "stopped":
            return Event(when, kind, f"stopped by {found['signal']}")
        if kind == "lost":
            return Event(when, kind, f"connection lost: {found['error']}")
        return Event(when, kind, found.get("error", ""))
    return Event(when, "line")


def event_of_record(record: dict[str, object], when: datetime) -> Event:
    """Return what a JSON Lines note says about the connection."""
    kind = str(record.get("event"))
    if kind in PAUSES:
        return Event(when, kind, since=local_time(str(record.get("since"))), until=local_time(str(record.get("until"))))
    if kind == "stopped":
        return Event(when, kind, f"stopped by {record.get('signal')}")
    if kind == "lost":
        return Event(when, kind, f"connection lost: {record.get('error')}")
    if kind == "retrying":
        return Event(when, kind, str(record.get("error", "")))
    if kind in ("connecting", "connected"):
        return Event(when, kind)
    return Event(when, "line")


@dataclass
class Period:
    """A span the reader was connected, or a gap with its reason."""

    kind: str  # CONNECTED or GAP
    start: datetime
    end: datetime
    reason: str = ""

    @property
    def length(self) -> timedelta:
        return self.end - self.start


class Coverage:
    """Turns the history's events, oldest first, into periods; sans-IO, so tables test it."""

    def __init__(self) -> None:
        self.periods: list[Period] = []
        self._open: Period | None = None  # the period going on
        self._last: datetime | None = None  # the time of the last line seen

    def feed(self, event: Event) -> None:
        """Take one event."""
        handle = getattr(self, f"_on_{event.kind}", None)
        if handle is not None:
            handle(event)
        if self._last is None or event.time > self._last:
            self._last = event.time

    def _close(self, end: datetime) -> None:
        if self._open is not None:
            self._open.end = max(end, self._open.start)
            if self._open.kind == CONNECTED or self._open.length or self._open.reason != STARTING:
                self.periods.append(self._open)
            self._open = None

    def _begin(self, kind: str, start: datetime, reason: str = "") -> None:
        self._close(start)
        self._open = Period(kind, start, start, reason)

    def _on_connecting(self, event: Event) -> None:
        current = self._open
        if current is None:
            self._begin(GAP, event.time, STARTING)
        elif current.kind == CONNECTED:  # a new start with no word of the last one's end
            self._begin(GAP, self._last or event.time, DIED)

    def _on_connected(self, event: Event) -> None:
        if self._open is not None and self._open.kind == CONNECTED:
            self._begin(GAP, self._last or event.time, DIED)
        self._begin(CONNECTED, event.time)

    def _on_lost(self, event: Event) -> None:
        if self._open is None or self._open.kind == CONNECTED:
            self._begin(GAP, event.time, event.reason)

    def _on_retrying(self, event: Event) -> None:
        current = self._open
        if current is None or current.kind == CONNECTED:
            self._begin(GAP, event.time, event.reason)
        elif current.reason == STARTING:
            current.reason = event.reason  # why the start has no connection yet: refused, no answer

    def _on_stopped(self, event: Event) -> None:
        current = self._open
        if current is None or current.kind == CONNECTED:
            self._begin(GAP, event.time, f"{event.reason}; {NOT_RUNNING}")
        else:
            current.reason = f"{current.reason}; then {event.reason}; {NOT_RUNNING}"

    def _on_stalled(self, event: Event) -> None:
        self._on_disk_full(event)

    def _on_disk_full(self, event: Event) -> None:
        current = self._open
        if current is None or current.kind != CONNECTED or event.since is None or event.until is None:
            return
        since = max(event.since, current.start)
        self._close(since)
        self.periods.append(Period(GAP, since, max(event.until, since), PAUSES[event.kind]))
        self._open = Period(CONNECTED, max(event.until, since), max(event.until, since))

    def finish(self, now: datetime) -> list[Period]:
        """Close what goes on: a span at the last line, a gap at now (no reader has written since); return all."""
        current = self._open
        if current is not None:
            self._close((self._last or current.start) if current.kind == CONNECTED else max(now, current.start))
        return self.periods


def clip(periods: Iterable[Period], since: datetime | None, until: datetime | None) -> list[Period]:
    """Return the periods cut to [since, until)."""
    clipped = []
    for period in periods:
        start = max(period.start, since) if since else period.start
        end = min(period.end, until) if until else period.end
        within = (since is None or period.start >= since) and (until is None or period.start < until)
        if end > start or (end == start and within):  # a gap shorter than the stamps' precision is one too
            clipped.append(Period(period.kind, start, end, period.reason))
    return clipped


@dataclass(frozen=True)
class Totals:
    """What the periods add up to."""

    covered: timedelta
    missed: timedelta
    gaps: int
    longest: Period | None


def add_up(periods: list[Period]) -> Totals:
    """Return the totals of periods."""
    gaps = [period for period in periods if period.kind == GAP]
    covered = sum((period.length for period in periods if period.kind == CONNECTED), timedelta())
    missed = sum((period.length for period in gaps), timedelta())
    longest = max(gaps, key=lambda period: period.length, default=None)
    return Totals(covered, missed, len(gaps), longest)


def format_length(length: timedelta, seconds: bool) -> str:
    """Return a length as H:MM, or H:MM:SS when the stamps have seconds."""
    total = int(length.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if seconds else f"{hours}:{minutes:02d}"


def format_moment(when: datetime, seconds: bool) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def text_report(periods: list[Period], seconds: bool) -> list[str]:
    """Return the report as text lines: a line per period, then the totals."""
    lines = []
    for period in periods:
        line = (
            f"{period.kind:<10} {format_moment(period.start, seconds)}  {format_moment(period.end, seconds)}"
            f"  {format_length(period.length, seconds):>9}"
        )
        lines.append(f"{line}  {period.reason}" if period.reason else line)
    totals = add_up(periods)
    hours = 3600
    summary = (
        f"covered {totals.covered.total_seconds() / hours:.1f} h, "
        f"{totals.missed.total_seconds() / hours:.1f} h in {totals.gaps} gap{'' if totals.gaps == 1 else 's'}"
    )
    if totals.longest is not None:
        longest = totals.longest
        summary += (
            f", longest gap {format_length(longest.length, seconds)} from {format_moment(longest.start, seconds)}"
            f" ({longest.reason})"
        )
    lines.append(summary)
    if not seconds:
        lines.append("times are to the minute, as the text history's stamps are")
    return lines


def json_report(periods: list[Period], seconds: bool) -> list[str]:
    """Return the report as JSON Lines: an object per period, then one with the totals."""
    lines = []
    for period in periods:
        record: dict[str, object] = {
            "kind": period.kind,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "seconds": int(period.length.total_seconds()),
        }
        if period.reason:
            record["reason"] = period.reason
        lines.append(json.dumps(record, ensure_ascii=False))
    totals = add_up(periods)
    summary: dict[str, object] = {
        "kind": "totals",
        "covered_seconds": int(totals.covered.total_seconds()),
        "gap_seconds": int(totals.missed.total_seconds()),
        "gaps": totals.gaps,
        "longest_gap_seconds": int(totals.longest.length.total_seconds()) if totals.longest else 0,
        "precision": "second" if seconds else "minute",
    }
    lines.append(json.dumps(summary, ensure_ascii=False))
    return lines
