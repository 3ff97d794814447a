"""Stamping the reader's lines: LineStamper, the clock, split_strftime and the formatted history lines."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    EMOJI,
    ISO_FORMAT,
    STAMP_TEXT,
    WAIT,
    WHEN,
    FakeTime,
    StartReader,
    format_history_block,
    format_history_line,
    format_status_line,
)

from _minechat.stamping import (
    LineStamper,
    StampClock,
    split_strftime,
)
from chat_io import decode_line

ISO_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"


S = "[S]"  # a stamp; the stamper takes whatever it is given


T = "[T]"


PIECE = 8  # a small piece size, so the tables stay readable


async def test_time_format_sets_the_stamp(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader(time_format=ISO_FORMAT)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Eve: hi\n")
    (line,) = await reader.out.wait_for_lines(1)
    assert re.fullmatch(ISO_STAMP + " Eve: hi", line)
    stamp = datetime.strptime(line.split(" ")[0], ISO_FORMAT)
    assert abs(stamp - datetime.now().astimezone()) < timedelta(seconds=WAIT)
    history = reader.settings.log_path.read_text(encoding="utf-8").splitlines()
    assert history[-1] == line
    assert all(re.match(ISO_STAMP + r" \*\*\* ", note) for note in history[:-1])


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
    assert stamper.feed(b"A: cut", S) == ""  # all six bytes held, as the flush shows
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
    given = 0  # characters of the line given out, without its stamp
    for count in range(1, 1001):
        given += len(stamper.feed(b"0123456789", S).removeprefix(f"{S} "))
        assert count * 10 - given <= PIECE


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


def test_text_stamper_says_when_a_line_is_open() -> None:
    stamper = LineStamper(max_piece=4)
    assert stamper.feed(b"abcdefghij", "[s]") == "[s] abcdefgh"
    assert stamper.continued
    assert stamper.feed(b"\n", "[t]") == "ij\n"
    assert not stamper.continued


def test_format_history_line() -> None:
    assert format_history_line("Eve: hi", WHEN) == "[27.11.26 09:05] Eve: hi\n"


def test_format_status_line_is_marked() -> None:
    assert format_status_line("connected", WHEN) == "[27.11.26 09:05] *** connected\n"


@pytest.mark.parametrize(
    "block",
    [
        b"",
        b"one\n",
        b"one\ntwo\n",
        b"one\r\ntwo\r\n\n",
        b"bad \xd0\nnext\n",
        b"\x1b[2J\x00\n\xc2\x9b\n",
        "Ева: привет\n".encode(),
    ],
)
def test_history_block_matches_line_by_line(block: bytes) -> None:
    expected = "".join(format_history_line(decode_line(line), WHEN) for line in block.splitlines(keepends=True))
    assert format_history_block(block, WHEN) == expected


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_stamper_never_splits_a_four_byte_character(padding: int) -> None:
    stamper = LineStamper(max_piece=6)
    line = "a" * padding + EMOJI * 4
    text = stamper.feed(line.encode(), STAMP_TEXT) + stamper.flush(STAMP_TEXT)
    assert "\ufffd" not in text
    assert text == f"{STAMP_TEXT} {line}\n"


def test_stamper_cut_backs_up_over_three_continuation_bytes_exactly() -> None:
    stamper = LineStamper(max_piece=4)
    # Five bytes held: the cut at 4 would fall after the first byte of the emoji, so it backs up to 1.
    assert stamper.feed(("a" + EMOJI).encode(), STAMP_TEXT) == f"{STAMP_TEXT} a"
    assert stamper.flush(STAMP_TEXT) == f"{EMOJI}\n"  # the four bytes held


def test_stamper_holds_an_unfinished_line_of_exactly_the_limit() -> None:
    stamper = LineStamper(max_piece=4)
    assert stamper.completed is False
    assert stamper.feed(b"abcd", STAMP_TEXT) == ""  # all four held, as the next feed shows
    assert stamper.feed(b"\n", STAMP_TEXT) == f"{STAMP_TEXT} abcd\n"
    assert stamper.completed is True


def test_stamper_gives_whole_lines_and_pieces_from_one_chunk() -> None:
    stamper = LineStamper(max_piece=4)
    assert stamper.feed(b"x\nabcdefgh", STAMP_TEXT) == f"{STAMP_TEXT} x\n{STAMP_TEXT} abcd"
    assert stamper.flush(STAMP_TEXT) == "efgh\n"
    assert stamper.feed(b"y\n", STAMP_TEXT) == f"{STAMP_TEXT} y\n"  # after a flush, a line starts afresh
    assert stamper.flush(STAMP_TEXT) == ""


def test_stamper_pieces_replace_bytes_that_are_not_utf8() -> None:
    stamper = LineStamper(max_piece=4)
    assert stamper.feed(b"\xff" * 5, STAMP_TEXT) == f"{STAMP_TEXT} " + "\ufffd" * 4
    assert stamper.flush(STAMP_TEXT) == "\ufffd\n"


def test_stamper_piece_never_splits_a_character_after_a_carriage_return() -> None:
    stamper = LineStamper(max_piece=4)
    text = stamper.feed("abc\rЖЖ".encode(), STAMP_TEXT) + stamper.flush(STAMP_TEXT)
    assert text == f"{STAMP_TEXT} abc\\rЖЖ\n"
