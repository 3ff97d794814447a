"""Output: the background writer that never blocks the reader, raw text output, and logging with secrets hidden."""

from __future__ import annotations

from helpers import Gate, note

from _minechat.output import BackgroundWriter


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
