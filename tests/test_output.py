"""Output: the background writer that never blocks the reader, raw text output, and logging with secrets hidden."""

from __future__ import annotations

import io
import logging
import re
import threading
from pathlib import Path

import pytest
from helpers import WAIT, note

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from _minechat.output import OUTPUT_LIMIT_CHARS, BackgroundWriter, RawTextOutput, configure_logging


class GatedOutput:
    """An output whose writes wait until the test opens the gate."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write(self, text: str) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT)
        self.written.append(text)


def skip_note(count: int) -> str:
    return f"*** {count} skipped\n"


class SlowRaw:
    """A raw file that is non-blocking: it sometimes takes nothing (None), and then one byte at a time."""

    def __init__(self) -> None:
        self.data = b""
        self.calls = 0

    def write(self, data: memoryview) -> int | None:
        self.calls += 1
        if self.calls % 2:
            return None
        self.data += bytes(data[:1])
        return 1


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


@pytest.mark.parametrize("background", [False, True])
def test_configured_logging_hides_known_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    configure_logging(verbose=False, background=background, secrets={"sekrit-token"})
    log = logging.getLogger("anyone")
    log.warning("the server said %r", "bad sekrit-token here")
    log.debug("not shown at info level")
    _minechat.output.flush_logging()
    err = capsys.readouterr().err
    assert err.endswith(" WARNING the server said 'bad <token> here'\n")
    assert "sekrit" not in err
    assert "not shown" not in err


def test_verbose_logging_shows_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(verbose=True)
    logging.getLogger("anyone").debug("dialogue")
    assert capsys.readouterr().err.endswith(" DEBUG dialogue\n")


def test_background_writer_skips_what_does_not_fit_and_says_how_much() -> None:
    out = GatedOutput()
    writer = BackgroundWriter(out.write, skip_note, limit=10)
    assert writer.put("abc\n") is True
    assert out.entered.wait(WAIT)  # being written, still counted
    assert writer.put("defgh\n") is True  # exactly the limit
    assert writer.put("x\ny\nz") is False  # two line ends skipped, and the start of a third line
    assert writer.put("w") is False  # more of that line: skipped, its end not seen yet
    assert writer.put("v\n") is False  # its end: the third skipped line; nothing after it to show
    out.gate.set()
    writer.close(WAIT)
    writer._thread.join(WAIT)
    assert "".join(out.written) == "abc\ndefgh\n*** 3 skipped\n"
    assert writer.put("late\n") is False


def test_background_writer_puts_its_note_on_a_line_of_its_own() -> None:
    out = GatedOutput()
    writer = BackgroundWriter(out.write, skip_note, limit=4)
    assert writer.put("ab") is True
    assert out.entered.wait(WAIT)
    assert writer.put("cdefg\n") is False
    assert writer.put("h") is True  # it fits: the note of the skipped line goes before it
    out.gate.set()
    writer.close(WAIT)
    writer._thread.join(WAIT)
    assert "".join(out.written) == "ab\n*** 1 skipped\nh"


def test_background_writer_stops_after_a_failed_write() -> None:
    failures: list[BaseException] = []

    def fail(text: str) -> None:
        raise OSError(5, "Input/output error")

    writer = BackgroundWriter(fail, skip_note, on_failure=failures.append)
    assert writer.put("a\n") is True
    writer._thread.join(WAIT)
    assert isinstance(writer.failure, OSError) and failures == [writer.failure]
    assert writer.wait_written(WAIT) is True
    assert writer.put("b\n") is False


def test_background_writer_stuck_output_is_waited_for_once() -> None:
    out = GatedOutput()
    writer = BackgroundWriter(out.write, skip_note, name="stuck")
    assert writer._thread.name == "stuck" and writer._thread.daemon
    writer.put("a\n")
    assert out.entered.wait(WAIT)
    assert writer.wait_written(0.05) is False
    assert writer.wait_written(WAIT) is False  # at once: the output is stuck
    writer.close(WAIT)
    out.gate.set()
    writer._thread.join(WAIT)
    assert not writer._thread.is_alive()
    assert out.written == ["a\n"]


def test_raw_text_output_writes_encoded_bytes_straight_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with open(path, "w", encoding="ascii") as stream:
        output = RawTextOutput(stream)
        output.write("café ✓\n")
        output.flush()
        assert path.read_bytes() == b"caf\\xe9 \\u2713\n"  # written before the stream is flushed


def test_raw_text_output_waits_out_a_non_blocking_file() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    output = RawTextOutput(stream)
    raw = SlowRaw()
    output._raw = raw
    output.write("ЖX")
    assert raw.data == "ЖX".encode()


def test_raw_text_output_without_a_file_writes_to_the_stream() -> None:
    stream = io.StringIO()
    RawTextOutput(stream).write("a\n")  # type: ignore[arg-type]
    assert stream.getvalue() == "a\n"


def test_make_output_safe_lets_a_narrow_console_print_escapes() -> None:
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="ascii")
    _minechat.output.make_output_safe(stream)
    stream.write("é\n")
    stream.flush()
    assert buffer.getvalue() == b"\\xe9\n"


@pytest.mark.parametrize("error", [ValueError("detached"), OSError(9, "bad file")])
def test_make_output_safe_ignores_streams_it_cannot_change(error: Exception) -> None:
    class Stubborn:
        def reconfigure(self, **options: str) -> None:
            raise error

    _minechat.output.make_output_safe(Stubborn())
    _minechat.output.make_output_safe(object())


def test_a_fresh_secret_filter_hides_what_it_is_taught() -> None:
    taught: set[str] = set()
    secrets = _minechat.output.SecretFilter(taught)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s", ("abc",), None)
    assert secrets.filter(record) and record.getMessage() == "token abc"
    taught.add("abc")  # the caller's set, read at each record
    assert secrets.filter(record) and record.getMessage() == "token <token>"


def test_log_lines_start_with_the_time(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(verbose=False)
    logging.getLogger("anyone").warning("hi")
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING hi\n", capsys.readouterr().err)


def test_raw_text_output_to_a_stream_without_an_encoding() -> None:
    class Bare:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    stream = Bare()
    RawTextOutput(stream).write("ж\n")  # type: ignore[arg-type]
    assert stream.text == "ж\n"


def test_background_writer_close_waits_no_longer_than_told() -> None:
    out = GatedOutput()
    writer = BackgroundWriter(out.write, skip_note)
    assert writer._thread.name == "output"
    writer.put("a\n")
    assert out.entered.wait(WAIT)
    writer.close(0.05)  # the output is stuck: closing does not wait for it
    assert out.written == [] and writer.failure is None
    out.gate.set()
    writer._thread.join(WAIT)
    assert out.written == ["a\n"]


def test_background_log_handler_thread_is_named() -> None:
    handler = _minechat.output.BackgroundHandler(io.StringIO())  # type: ignore[arg-type]
    try:
        assert handler._writer._thread.name == "log"
    finally:
        handler.close()


def test_one_text_longer_than_the_stdout_queue_is_written_when_nothing_waits() -> None:
    written: list[str] = []
    done = threading.Event()
    text = "[27.11.26 10:00] Eve: hi\n" * (OUTPUT_LIMIT_CHARS // 10)  # a backlog of thousands of lines

    def write(chunk: str) -> None:
        written.append(chunk)
        if sum(map(len, written)) >= len(text):
            done.set()

    writer = BackgroundWriter(write, lambda count: f"{count} skipped\n", name="test-stdout")
    try:
        assert writer.put(text)
        assert done.wait(WAIT)
    finally:
        writer.close()
    assert "".join(written) == text
