"""The sans-IO parts of the reader's path, from tables: LineStamper and BackgroundWriter."""

from __future__ import annotations

import threading

import pytest

from chat_io import BackgroundWriter, LineStamper

S = "[S]"  # a stamp; the stamper takes whatever it is given
T = "[T]"
PIECE = 8  # a small piece size, so the tables stay readable


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


class Gate:
    """An output that blocks until the test lets it write."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.open = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> None:
        self.entered.set()
        assert self.open.wait(5)
        self.written.append(text)


def note(count: int) -> str:
    return f"*** {count} skipped\n"


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
