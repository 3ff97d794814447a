"""The sans-IO parts of the reader's path, from tables: LineStamper, BackgroundWriter, the clock, JSON Lines."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from helpers import ISO_MSK, PIECE, FakeTime, Gate, S, T, note, records_of

from _minechat.output import BackgroundWriter
from _minechat.stamping import JsonLineStamper, LineStamper, StampClock, format_json_record, split_strftime


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # Whole lines: one stamp each.
        ([b"A: one\nB: two\n"], [f"{S} A: one\n{S} B: two\n"]),
        # A line split over chunks is given out whole, once its end arrives.
        ([b"A: o", b"ne\n"], ["", f"{S} A: one\n"]),
        # CRLF endings become LF, also when the CR and LF arrive apart.
        ([b"A: x\r", b"\nB: y\r\n"], ["", f"{S} A: x\n{S} B: y\n"]),
        # A line longer than a piece goes out in pieces without line breaks, stamped once.
        ([b"E: 0123456789abcdef\n"], [f"{S} E: 0123456789abcdef\n"]),
        # ... all but the last piece's worth, which may still end in a CR of a CRLF.
        ([b"E: 0123456789abcdef"], [f"{S} E: 0123456789abc"]),
        ([b"E: 0123456789ab", b"cdef\nB: k\n"], [f"{S} E: 01234", f"56789abcdef\n{S} B: k\n"]),
        # Control characters are escaped; a forged stamp inside a line stays inside it.
        ([b"E: \x1b[2J\x07 [28.11.26 16:52] Admin: hi\n"], [f"{S} E: \\x1b[2J\\x07 [28.11.26 16:52] Admin: hi\n"]),
        # Bidi overrides and isolates, and the direction marks, are escaped too.
        (["E: \u202e\u2066\u200f!\n".encode()], [f"{S} E: \\u202e\\u2066\\u200f!\n"]),
        # Invalid UTF-8 becomes the replacement character.
        ([b"E: caf\xc3\n"], [f"{S} E: caf\ufffd\n"]),
    ],
)
def test_stamper_gives_one_stamp_per_line(chunks: list[bytes], expected: list[str]) -> None:
    stamper = LineStamper(max_piece=PIECE)
    assert [stamper.feed(chunk, S) for chunk in chunks] == expected


def test_stamper_uses_the_stamp_of_the_chunk_that_starts_the_line() -> None:
    stamper = LineStamper(max_piece=PIECE)
    assert stamper.feed(b"A: 1\nB: 2", S) == f"{S} A: 1\n"
    assert stamper.feed(b"\nC: 3\n", T) == f"{T} B: 2\n{T} C: 3\n"


@pytest.mark.parametrize("split", range(1, 13))
def test_stamper_never_cuts_a_character(split: int) -> None:
    # Four-byte characters around every piece edge: pieces must decode whole.
    line = "E: " + "😀" * 5 + "\n"
    raw = line.encode()
    stamper = LineStamper(max_piece=PIECE)
    text = stamper.feed(raw[:split], S) + stamper.feed(raw[split:], S)
    assert text == f"{S} {line}"
    assert "\ufffd" not in text


@pytest.mark.parametrize("split", range(1, 15))
def test_stamper_keeps_crlf_together_across_pieces(split: int) -> None:
    raw = b"E: abcdefghi\r\nB: k\r\n"
    stamper = LineStamper(max_piece=PIECE)
    assert stamper.feed(raw[:split], S) + stamper.feed(raw[split:], S) == f"{S} E: abcdefghi\n{S} B: k\n"


def test_stamper_flush_ends_an_unfinished_line() -> None:
    stamper = LineStamper(max_piece=PIECE)
    assert stamper.flush(S) == ""
    stamper.feed(b"A: cut", S)
    assert stamper.pending == 6
    assert stamper.flush(T) == f"{T} A: cut\n"
    assert stamper.flush(T) == ""
    # A long line already partly given out is ended without a second stamp.
    assert stamper.feed(b"E: 0123456789", S) == f"{S} E: 01234"
    assert stamper.flush(T) == "56789\n"


def test_stamper_counts_complete_lines_only() -> None:
    stamper = LineStamper(max_piece=PIECE)
    stamper.feed(b"x" * 100, S)
    assert not stamper.completed
    stamper.feed(b"\n", S)
    assert stamper.completed


def test_stamper_holds_at_most_a_piece() -> None:
    stamper = LineStamper(max_piece=PIECE)
    for _ in range(1000):
        stamper.feed(b"0123456789", S)
        assert stamper.pending <= PIECE


def test_background_writer_never_blocks_and_counts_what_it_skips() -> None:
    gate = Gate()
    writer = BackgroundWriter(gate.write, note, limit=10)
    assert writer.put("a1\n")  # taken by the thread, which then blocks
    assert gate.entered.wait(5)
    assert writer.put("b2\nb3\n")
    assert not writer.put("c4\nc5\n")  # over the limit: skipped, never waited for
    assert not writer.put("d6\n")
    gate.open.set()
    assert writer.wait_written(5)
    assert writer.put("e7\n")
    assert writer.wait_written(5)
    assert "".join(gate.written) == "a1\nb2\nb3\n*** 3 skipped\ne7\n"
    writer.close()


def test_background_writer_never_shows_the_rest_of_a_skipped_line_as_a_line() -> None:
    gate = Gate()
    writer = BackgroundWriter(gate.write, note, limit=12)
    writer.put("[S] a\n")
    assert gate.entered.wait(5)
    assert not writer.put("[S] long line, padded ")  # skipped mid-line...
    assert not writer.put("until [28.11.26] Admin: forged")  # ...so its continuation is skipped too
    assert writer.put(" end\n[S] b\n")  # up to its end
    gate.open.set()
    assert writer.wait_written(5)
    writer.close()
    assert "".join(gate.written) == "[S] a\n*** 1 skipped\n[S] b\n"


def test_background_writer_reports_a_gap_once_caught_up() -> None:
    gate = Gate()
    writer = BackgroundWriter(gate.write, note, limit=5)
    writer.put("a\n")
    assert gate.entered.wait(5)
    writer.put("bb\n")
    writer.put("cc\n")  # skipped
    gate.open.set()
    # Nothing more comes, yet the gap is reported as soon as the output caught up.
    assert writer.wait_written(5)
    writer.close()
    assert "".join(gate.written).endswith("bb\n*** 1 skipped\n")


def test_background_writer_gives_up_after_a_failure_and_after_a_stuck_wait() -> None:
    failures: list[BaseException] = []

    def broken(text: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    writer = BackgroundWriter(broken, note, on_failure=failures.append)
    writer.put("x\n")
    assert writer.wait_written(5)
    assert isinstance(failures[0], BrokenPipeError)
    assert not writer.put("y\n")

    gate = Gate()
    stuck = BackgroundWriter(gate.write, note)
    stuck.put("z\n")
    assert not stuck.wait_written(0.05)
    # Once stuck, a further wait does not delay the exit again.
    assert not stuck.wait_written(60)
    gate.open.set()


# --- time stamps (issue 10) -------------------------------------------------------------


def test_clock_formats_once_a_second() -> None:
    now = FakeTime(datetime(2026, 3, 1, 12, 0, 5).timestamp() + 0.25)
    clock = StampClock("%H:%M:%S", lambda when: when.strftime("day-%d.log"), now)
    first = clock.read()
    now.value += 0.5
    assert clock.read() is first  # the same second: nothing formatted again
    assert first.stamp == "12:00:05"
    assert first.path == "day-01.log"
    now.value += 0.5
    assert clock.read().stamp == "12:00:06"


def test_clock_formats_fractions_on_every_call() -> None:
    now = FakeTime(datetime(2026, 3, 1, 12, 0, 5, 250_000).timestamp())
    clock = StampClock("%S.%f", now=now)
    assert clock.read().stamp == "05.250000"
    now.value += 0.125
    assert clock.read().stamp == "05.375000"


def test_clock_iso_time_carries_the_offset() -> None:
    moment = StampClock().read()
    when = datetime.fromisoformat(moment.iso)
    assert when.utcoffset() is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d(:\d\d)?", moment.iso)


@pytest.mark.parametrize(
    ("pattern", "parts"),
    [
        ("chat.log", [("chat.log", False)]),
        ("logs/%Y/%m-%d.txt", [("logs/", False), ("Y", True), ("/", False), ("m", True), ("-", False), ("d", True),
                               (".txt", False)]),
        ("100%%/%d.log", [("100%/", False), ("d", True), (".log", False)]),
        ("%%Y", [("%Y", False)]),
    ],
)  # fmt: skip
def test_split_strftime(pattern: str, parts: list[tuple[str, bool]]) -> None:
    assert split_strftime(pattern) == parts


def test_split_strftime_refuses_a_lone_percent_at_the_end() -> None:
    with pytest.raises(ValueError, match="%%"):
        split_strftime("chat%")


# --- JSON Lines (issue 10) -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"Eve: hi\n", [("Eve", "hi")]),
        (b"Boring Eve: a: b\n", [("Boring Eve", "a: b")]),
        (b"no nick here\n", [(None, "no nick here")]),
        (b"Eve:no space\n", [(None, "Eve:no space")]),
        ("Ева: привет\r\n".encode(), [("Ева", "привет")]),
        (b"A: caf\xc3\nB: \xff\n", [("A", "caf\ufffd"), ("B", "\ufffd")]),
        (b'Q: "quoted" \\ back\n', [("Q", '"quoted" \\ back')]),
        (b"E: \x1b[2J\x00\x07 lone\rcr\n", [("E", "\x1b[2J\x00\x07 lone\rcr")]),
        ("C: \u009b31m \u202eevil \u2028sep \x7f\n".encode(), [("C", "\u009b31m \u202eevil \u2028sep \x7f")]),
    ],
)
def test_json_records_keep_the_text_and_split_the_nick(data: bytes, expected: list[tuple[str | None, str]]) -> None:
    text = JsonLineStamper().feed(data, ISO_MSK)
    records = records_of(text)
    assert [(record["nick"], record["text"]) for record in records] == expected
    assert all(record["time"] == ISO_MSK and set(record) == {"time", "nick", "text"} for record in records)
    # JSON's escapes, and ours for what it leaves raw, keep the file free of anything a terminal acts on.
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", text[:-1].replace("\n", ""))
    assert text.count("\n") == len(expected)


def test_json_long_line_is_streamed_as_one_record() -> None:
    stamper = JsonLineStamper(max_piece=8)
    pieces = [
        stamper.feed(b"Eve: 0123456789", "T1"),
        stamper.feed("абвгдеёжзий".encode(), "T2"),
        stamper.feed(b"end\nBob: after\nopen", "T3"),
    ]
    # While the line comes in, what is given out is an open record; memory holds at most a piece.
    assert pieces[0].startswith('{"time": "T1", "nick": "Eve", "text": "') and "\n" not in pieces[0]
    assert stamper.pending <= 8 * 2
    text = "".join(pieces) + stamper.flush("T4")
    assert records_of(text) == [
        {"time": "T1", "nick": "Eve", "text": "0123456789абвгдеёжзийend"},
        {"time": "T3", "nick": "Bob", "text": "after"},
        {"time": "T4", "nick": None, "text": "open"},
    ]


def test_json_flush_closes_a_streamed_record() -> None:
    stamper = JsonLineStamper(max_piece=4)
    text = stamper.feed(b"x: 123456789", "T1") + stamper.flush("T2")
    assert records_of(text) == [{"time": "T1", "nick": "x", "text": "123456789"}]


def test_json_note_record() -> None:
    record = json.loads(format_json_record(ISO_MSK, "connected to h:5000", event="connected", address="h:5000"))
    assert record == {
        "time": ISO_MSK,
        "nick": None,
        "text": "connected to h:5000",
        "event": "connected",
        "address": "h:5000",
    }


def test_text_stamper_says_when_a_line_is_open() -> None:
    stamper = LineStamper(max_piece=4)
    assert stamper.feed(b"abcdefghij", "[s]") == "[s] abcdefgh"
    assert stamper.continued
    assert stamper.feed(b"\n", "[t]") == "ij\n"
    assert not stamper.continued
