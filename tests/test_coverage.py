"""--coverage: the spans the reader was connected and the gaps with their reasons, from the notes it wrote."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import WAIT, FakeTime, StartReader, query_main, wait_for_file

from _minechat.coverage import CONNECTED, DIED, DISK_FULL, GAP, NOT_RUNNING, STALLED, Coverage, Event, Period, clip
from _minechat.history import HISTORY_FORMATS
from _minechat.stamping import StampClock
from chat_io import EXIT_OK

T0 = datetime(2026, 12, 5, 10, 0)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- from events, a table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [Event(at(0), "connecting"), Event(at(0), "connected"), Event(at(50), "line")],
            [(CONNECTED, 0, 50, "")],
            id="one span, to the last line",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(0), "connected"),
                Event(at(30), "lost", "connection lost: reset"),
                Event(at(30), "connecting"),
                Event(at(31), "retrying", "cannot connect: refused"),
                Event(at(33), "connecting"),
                Event(at(33), "connected"),
                Event(at(40), "line"),
            ],
            [(CONNECTED, 0, 30, ""), (GAP, 30, 33, "connection lost: reset"), (CONNECTED, 33, 40, "")],
            id="lost connection",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(1), "retrying", "cannot connect to x: refused"),
                Event(at(5), "connecting"),
                Event(at(5), "connected"),
                Event(at(9), "line"),
            ],
            [(GAP, 0, 5, "cannot connect to x: refused"), (CONNECTED, 5, 9, "")],
            id="refused at start",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(0), "connected"),
                Event(at(20), "stopped", "stopped by SIGTERM"),
                Event(at(60), "connecting"),
                Event(at(60), "connected"),
                Event(at(70), "line"),
            ],
            [(CONNECTED, 0, 20, ""), (GAP, 20, 60, f"stopped by SIGTERM; {NOT_RUNNING}"), (CONNECTED, 60, 70, "")],
            id="stop and restart",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(0), "connected"),
                Event(at(25), "line"),
                Event(at(90), "connecting"),
                Event(at(90), "connected"),
                Event(at(95), "line"),
            ],
            [(CONNECTED, 0, 25, ""), (GAP, 25, 90, DIED), (CONNECTED, 90, 95, "")],
            id="killed, then started again",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(0), "connected"),
                Event(at(30), "disk_full", since=at(10), until=at(20)),
                Event(at(40), "line"),
            ],
            [(CONNECTED, 0, 10, ""), (GAP, 10, 20, DISK_FULL), (CONNECTED, 20, 40, "")],
            id="full disk",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(0), "connected"),
                Event(at(30), "stalled", since=at(10), until=at(20)),
                Event(at(40), "line"),
            ],
            [(CONNECTED, 0, 10, ""), (GAP, 10, 20, STALLED), (CONNECTED, 20, 40, "")],
            id="history that could not be written",
        ),
        pytest.param(
            [
                Event(at(0), "connecting"),
                Event(at(0), "connected"),
                Event(at(10), "lost", "connection lost: reset"),
                Event(at(11), "stopped", "stopped by SIGINT"),
            ],
            [(CONNECTED, 0, 10, ""), (GAP, 10, 120, f"connection lost: reset; then stopped by SIGINT; {NOT_RUNNING}")],
            id="stopped while reconnecting: no reader since",
        ),
    ],
)
def test_events_make_spans_and_gaps(events: list[Event], expected: list[tuple[str, int, int, str]]) -> None:
    coverage = Coverage()
    for event in events:
        coverage.feed(event)
    periods = coverage.finish(now=at(120))
    assert [(p.kind, p.start, p.end, p.reason) for p in periods] == [(k, at(s), at(e), r) for k, s, e, r in expected]


def test_clip_cuts_periods_to_the_range() -> None:
    periods = [Period(CONNECTED, at(0), at(30)), Period(GAP, at(30), at(40), "x"), Period(CONNECTED, at(40), at(90))]
    assert clip(periods, at(35), at(50)) == [Period(GAP, at(35), at(40), "x"), Period(CONNECTED, at(40), at(50))]


# --- from a real reader's history -------------------------------------------------------------------------


def history_lines(folder: Path) -> str:
    return "".join(path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.log")))


@pytest.mark.parametrize("history_format", ["text", "jsonl"])
async def test_coverage_of_a_readers_history(
    server: FakeMinechatServer,
    tmp_path: Path,
    start_reader: StartReader,
    default_signal_handlers: None,
    capsys: pytest.CaptureFixture[str],
    history_format: str,
) -> None:
    """A lost connection, midnight, a stop by Ctrl-C, a start, a full disk, a kill: each where the notes put it."""
    clock = FakeTime(datetime(2026, 12, 4, 23, 30).timestamp())
    pattern = tmp_path / "%Y-%m-%d.log"
    options = {"log_path": pattern, "now": clock, "history_format": history_format, "backlog": 0}

    async def say(text: str, file: str) -> None:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(f"Eve: {text}\n".encode())
        await wait_for_file(tmp_path / file, lambda data: text.encode() in data)

    reader = await start_reader(**options)
    await say("first", "2026-12-04.log")
    clock.value += 15 * 60  # 23:45
    await server.drop_readers()
    await wait_for_file(tmp_path / "2026-12-04.log", lambda data: data.count(b"connected to") == 2)
    clock.value += 30 * 60  # 00:15: the next day's file
    await say("after midnight", "2026-12-05.log")
    os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(reader.task, WAIT) == 130
    clock.value += 45 * 60  # 01:00
    reader = await start_reader(**options)
    await say("started again", "2026-12-05.log")
    clock.value += 10 * 60  # 01:10
    await say("last words", "2026-12-05.log")
    reader.task.cancel()  # no word of its end, as a kill leaves none
    with pytest.raises(asyncio.CancelledError):
        await reader.task
    first_day = tmp_path / "2026-12-04.log"
    first_day.with_name(first_day.name + ".gz").write_bytes(gzip.compress(first_day.read_bytes()))
    first_day.unlink()  # as --compress leaves a finished day

    argv = ["--log_path", str(pattern), "--format", history_format, "--coverage", "--until", "2026-12-05 01:59"]
    code, out, _ = await asyncio.to_thread(query_main, argv, capsys)  # main runs its own event loop
    assert code == EXIT_OK
    if history_format == "jsonl":
        records = [json.loads(line) for line in out.splitlines()]
        periods = [(r["kind"], r["start"][11:16], r["end"][11:16], r.get("reason", "")) for r in records[:-1]]
        assert records[-1]["kind"] == "totals"
        assert records[-1]["covered_seconds"] == (45 + 10) * 60
        assert records[-1]["precision"] == "second"
    else:
        *rows, totals, precision = out.splitlines()
        shape = re.compile(r"(\w+) +\S+ (\S+)  \S+ (\S+) +\S+(?:  (.*))?")
        periods = [shape.fullmatch(row).groups(default="") for row in rows]  # type: ignore[union-attr]
        assert totals.startswith("covered 0.9 h, 0.8 h in 2 gaps, longest gap 0:45 from 2026-12-05 00:15")
        assert precision == "times are to the minute, as the text history's stamps are"
    assert [period[:3] for period in periods] == [
        ("connected", "23:30", "23:45"),
        ("gap", "23:45", "23:45"),
        ("connected", "23:45", "00:15"),  # across midnight and its two files
        ("gap", "00:15", "01:00"),
        ("connected", "01:00", "01:10"),  # to its last line: it died without a word
    ]
    assert periods[1][3].startswith("connection lost: ")
    assert periods[3][3] == f"stopped by SIGINT; {NOT_RUNNING}"


@pytest.mark.parametrize(
    ("event", "words", "reason"),
    [("disk_full", "disk was full", DISK_FULL), ("stalled", "history could not be written", STALLED)],
)
@pytest.mark.parametrize("history_format", ["text", "jsonl"])
def test_coverage_reads_the_disk_full_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history_format: str, event: str, words: str, reason: str
) -> None:
    history = HISTORY_FORMATS[history_format]
    clock = StampClock(now=lambda: 0)
    start, full, room, later = (datetime(2026, 12, 5, 10, m).astimezone() for m in (0, 10, 20, 30))
    notes = [
        history.note(clock.at(start.timestamp()), "connecting to x:5000", "connecting", {"address": "x:5000"}),
        history.note(clock.at(start.timestamp()), "connected to x:5000", "connected", {"address": "x:5000"}),
        history.note(
            clock.at(room.timestamp()),
            f"{words} from {full.isoformat()} to {room.isoformat()}; nothing received was lost",
            event,
            {"since": full.isoformat(), "until": room.isoformat()},
        ),
        history.note(clock.at(later.timestamp()), "history continues in y", "file_ended", {"next_file": "y"}),
    ]
    (tmp_path / "chat.log").write_text("".join(notes), encoding="utf-8")
    argv = ["--log_path", str(tmp_path / "chat.log"), "--format", history_format, "--coverage"]
    code, out, _ = query_main(argv, capsys)
    assert code == EXIT_OK
    if history_format == "jsonl":
        records = [json.loads(line) for line in out.splitlines()]
        assert [(r["kind"], r["seconds"], r.get("reason")) for r in records[:-1]] == [
            ("connected", 600, None),
            ("gap", 600, reason),
            ("connected", 600, None),
        ]
    else:
        assert [line.split()[5] for line in out.splitlines()[:3]] == ["0:10", "0:10", "0:10"]
        assert out.splitlines()[1].endswith(reason)
