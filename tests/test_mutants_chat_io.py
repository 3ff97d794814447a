"""chat_io behaviours that mutation testing found unchecked: each test here kills mutants the rest let live."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import signal
import socket
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import configargparse
import pytest
from fake_server import FakeMinechatServer
from helpers import (
    BIDI_CONTROLS,
    BIDI_ESCAPED,
    EMOJI,
    LINUX_ONLY,
    STAMP_TEXT,
    WAIT,
    FakeSocket,
    GatedOutput,
    PausableTransport,
    Sink,
    SlowRaw,
    assert_keepalive,
    needs_af_unix,
    skip_note,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import chat_io
from _minechat.output import SECRETS, BackgroundWriter, RawTextOutput, configure_logging
from _minechat.settings import MAX_PORT, port_number
from _minechat.stamping import LineStamper, format_history_block
from chat_io import LineFramer, decode_line, encode_line, open_connection, open_receiver, sanitize_text

# --- bidi controls, in single lines and in the history ----------------------------


def test_every_bidi_control_is_escaped_in_a_single_line() -> None:
    assert sanitize_text(f"a{BIDI_CONTROLS}b") == f"a{BIDI_ESCAPED}b"
    assert decode_line(f"a{BIDI_CONTROLS}b\r\n".encode()) == f"a{BIDI_ESCAPED}b"
    assert encode_line(f"a{BIDI_CONTROLS}b") == f"a{BIDI_ESCAPED}b\n".encode()


def test_every_bidi_control_is_escaped_in_the_history() -> None:
    block = f"Eve: {BIDI_CONTROLS}\nBob: x{BIDI_CONTROLS}\n".encode()
    expected = f"{STAMP_TEXT} Eve: {BIDI_ESCAPED}\n{STAMP_TEXT} Bob: x{BIDI_ESCAPED}\n"
    assert LineStamper().feed(block, STAMP_TEXT) == expected
    assert format_history_block(block, datetime(2026, 11, 27, 9, 5)) == expected


def test_bidi_controls_are_escaped_in_pieces_of_a_long_line_and_its_unfinished_end() -> None:
    stamper = LineStamper(max_piece=8)
    text = stamper.feed(("\u202e" * 5).encode(), STAMP_TEXT)  # 15 bytes: one piece of two characters goes out
    text += stamper.flush(STAMP_TEXT)
    assert text == f"{STAMP_TEXT} " + "\\u202e" * 5 + "\n"


# --- four-byte characters are never split ------------------------------------------


@pytest.mark.parametrize("padding", [0, 1, 2, 3])
def test_framer_never_splits_a_four_byte_character(padding: int) -> None:
    framer = LineFramer(max_line=6)
    line = ("a" * padding + EMOJI * 3).encode()
    block = framer.feed(line + b"\n")
    pieces = block.split(b"\n")[:-1]
    assert b"".join(pieces) == line
    assert all(len(piece) <= 6 for piece in pieces)
    for piece in pieces:
        piece.decode()  # raises if a character was cut


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
    assert stamper.pending == 4
    assert stamper.flush(STAMP_TEXT) == f"{EMOJI}\n"


# --- the global secret filter ------------------------------------------------------


@pytest.mark.parametrize("background", [False, True])
def test_configured_logging_hides_known_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    monkeypatch.setattr(SECRETS, "secrets", {"sekrit-token"})
    configure_logging(verbose=False, background=background)
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


# --- sockets ------------------------------------------------------------------------


@LINUX_ONLY
async def test_posting_connection_sets_keepalive_idle_interval_and_count(server: FakeMinechatServer) -> None:
    async with open_connection("127.0.0.1", server.write_port) as (_, writer):
        assert_keepalive(writer.get_extra_info("socket"))


@LINUX_ONLY
async def test_reading_connection_sets_keepalive_idle_interval_and_count(server: FakeMinechatServer) -> None:
    sink = Sink()
    async with open_receiver("127.0.0.1", server.read_port, sink) as connection:
        assert sink.connection is connection
        assert_keepalive(connection._transport.get_extra_info("socket"))  # type: ignore[union-attr]


def test_keepalive_on_no_socket_is_nothing() -> None:
    chat_io.enable_keepalive(None)


# --- ports ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "5000", "65535", " 65535 "])
def test_port_number_accepts_the_whole_range(value: str) -> None:
    assert port_number(value) == int(value)
    assert MAX_PORT == 65535


@pytest.mark.parametrize(
    ("value", "complaint"), [("0", "0 is outside 1..65535"), ("65536", "65536 is outside 1..65535")]
)
def test_port_number_refuses_outside_the_range(value: str, complaint: str) -> None:
    with pytest.raises(configargparse.ArgumentTypeError, match=f"^{complaint}$"):
        port_number(value)


def test_port_65535_reaches_the_connection(tmp_path: Path) -> None:
    import read_client

    settings = read_client.parse_settings(["--port", "65535"], {}, tmp_path)
    assert settings.port == 65535


# --- cuts in bytes that are not UTF-8 ------------------------------------------------


@pytest.mark.parametrize(
    ("max_line", "line", "pieces"),
    [
        # Three continuation bytes are backed over, never a fourth; with nothing left, the cut stays put.
        (4, b"\x80" * 6, [b"\x80", b"\x80", b"\x80" * 4]),
        (2, b"\x80" * 3, [b"\x80" * 2, b"\x80"]),
        (3, "😀".encode(), [b"\xf0\x9f\x98", b"\x80"]),
    ],
)
def test_framer_cuts_continuation_bytes_at_most_three_back(max_line: int, line: bytes, pieces: list[bytes]) -> None:
    assert LineFramer(max_line=max_line).feed(line + b"\n") == b"".join(piece + b"\n" for piece in pieces)


@pytest.mark.parametrize(
    ("chunks", "blocks"),
    [
        ([b"abcd\nab"], [b"abcd\n"]),  # a first line of exactly the limit is not cut
        ([b"ab", b"cd\n"], [b"", b"abcd\n"]),
        ([b"ab\nabcd"], [b"ab\n"]),  # a chunk of five bytes holding an unfinished line of four
        ([b"a\nb\nabcde\n"], [b"a\nb\nabcd\ne\n"]),  # the last line is cut, not the first
    ],
)
def test_framer_cuts_only_lines_over_the_limit(chunks: list[bytes], blocks: list[bytes]) -> None:
    framer = LineFramer(max_line=4)
    assert [framer.feed(chunk) for chunk in chunks] == blocks


# --- the stamper ----------------------------------------------------------------------


def test_stamper_holds_an_unfinished_line_of_exactly_the_limit() -> None:
    stamper = LineStamper(max_piece=4)
    assert stamper.pending == 0 and stamper.completed is False
    assert stamper.feed(b"abcd", STAMP_TEXT) == ""
    assert stamper.pending == 4
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


# --- escapes and quotes ------------------------------------------------------------------


@pytest.mark.parametrize(("char", "escape"), [("\x9f", "\\x9f"), ("\u061c", "\\u061c"), ("\u2028", "\\u2028")])
def test_escape_width_follows_the_code_point(char: str, escape: str) -> None:
    assert sanitize_text(char) == escape


def test_shorten_cuts_only_past_the_limit() -> None:
    assert chat_io.shorten("a" * 80) == "a" * 80
    assert chat_io.shorten("a" * 81) == "a" * 77 + "..."
    assert chat_io.shorten("abcdef", 5) == "ab..."


def test_quote_reply() -> None:
    assert _minechat.dialogue.quote_reply(b"") == "nothing (the connection was closed)"
    assert _minechat.dialogue.quote_reply(b"x" * 100 + b"\n") == '"' + "x" * 77 + '..."'


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (TimeoutError(), "timed out"),
        (OSError(None, "odd failure"), "odd failure"),
        (ValueError("bad value"), "bad value"),
        (ValueError(), "ValueError"),
        (chat_io.FileError("disk full"), "disk full"),
    ],
)
def test_describe_error(error: BaseException, text: str) -> None:
    assert chat_io.describe_error(error) == text


def test_unreadable_token_file_says_why(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(chat_io.FileError, match=r"^cannot read the token file .*token\.txt: 'utf-8' codec can't"):
        chat_io.load_token(tmp_path / "token.txt")


def test_empty_message_error_says_so() -> None:
    with pytest.raises(ValueError, match=r"^an empty message cannot be posted$"):
        _minechat.dialogue.encode_post(" ")


@pytest.mark.parametrize("function", [chat_io.save_token, chat_io.check_token_path])
def test_temporary_token_files_are_hidden_siblings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: object
) -> None:
    made: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(**options: str) -> tuple[int, str]:
        descriptor, name = real_mkstemp(**options)
        made.append(name)
        return descriptor, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    args = (tmp_path / "token.txt", "t") if function is chat_io.save_token else (tmp_path / "token.txt",)
    function(*args)  # type: ignore[operator]
    [name] = made
    assert Path(name).parent == tmp_path
    assert Path(name).name.startswith(".token.txt.") and name.endswith(".tmp")


# --- terminal output --------------------------------------------------------------------


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


# --- keepalive elsewhere: Windows and macOS names ---------------------------------------------


def test_keepalive_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "SIO_KEEPALIVE_VALS", 98, raising=False)
    sock = FakeSocket()
    chat_io.enable_keepalive(sock)  # type: ignore[arg-type]
    assert sock.calls == [
        ("setsockopt", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ("ioctl", 98, (1, 60_000, 10_000)),
    ]


def test_keepalive_on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "SIO_KEEPALIVE_VALS"):
        monkeypatch.delattr(socket, name, raising=False)
    monkeypatch.setattr(socket, "TCP_KEEPALIVE", 16, raising=False)
    sock = FakeSocket()
    chat_io.enable_keepalive(sock)  # type: ignore[arg-type]
    assert sock.calls == [
        ("setsockopt", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ("setsockopt", socket.IPPROTO_TCP, 16, 60),
    ]


def test_keepalive_failure_is_ignored() -> None:
    class Refusing(FakeSocket):
        def setsockopt(self, *args: object) -> None:
            raise OSError(92, "Protocol not available")

    chat_io.enable_keepalive(Refusing())  # type: ignore[arg-type]


# --- the parser -------------------------------------------------------------------------------


def test_help_shows_description_epilog_variables_and_defaults() -> None:
    parser = _minechat.settings.make_parser("Do a thing.", "SOME_PORT", 7, "port of things", "say more")
    parser.add_argument("--flag", env_var="FLAG", action="store_true", help="a flag")
    parser.add_argument("--given", env_var="GIVEN", default="g", help="shown (default: elsewhere)")
    text = " ".join(parser.format_help().split())
    assert "Do a thing." in text
    assert (
        "Every option can also be set in the environment or in a .env file in the current directory; the "
        "command line wins over the environment, the environment over .env. An empty value counts as unset."
    ) in text
    assert "port of things [env var: SOME_PORT] (default: 7)" in text
    assert "a flag [env var: FLAG]" in text and "a flag [env var: FLAG] (default" not in text
    assert "shown (default: elsewhere) [env var: GIVEN]" in text and "(default: g)" not in text
    assert "-h, --help show this help message and exit" in text
    assert text == " ".join(parser.format_help().split())  # asking twice adds nothing


def test_parser_spellings(tmp_path: Path) -> None:
    parser = _minechat.settings.make_parser("d", "SOME_PORT", 7, "p", "v")
    args = _minechat.settings.parse_arguments(parser, ["-v", "--connect_timeout", "2"], {}, tmp_path)
    assert args.verbose is True and args.connect_timeout == 2.0
    args = _minechat.settings.parse_arguments(parser, ["--connect-timeout", "3"], {}, tmp_path)
    assert args.verbose is False and args.connect_timeout == 3.0


def test_parse_arguments_reads_the_command_line_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["prog", "--port", "7001"])
    parser = _minechat.settings.make_parser("d", "SOME_PORT", 7, "p", "v")
    assert _minechat.settings.parse_arguments(parser, None, {}, tmp_path).port == 7001


@pytest.mark.parametrize(("value", "complaint"), [("x", "'x' is not a port number"), ("", "'' is not a port number")])
def test_port_number_names_what_is_not_a_number(value: str, complaint: str) -> None:
    with pytest.raises(configargparse.ArgumentTypeError, match=f"^{complaint}$"):
        port_number(value)


def test_dotenv_byte_order_mark_only_on_the_first_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbfHOST=h.example\nNICKNAME=\xef\xbb\xbfEve\n")
    merged = _minechat.settings.load_environment({}, tmp_path)
    assert merged["HOST"].value == "h.example"
    assert merged["NICKNAME"].value == "\ufeffEve"  # kept: only a file starts with a byte-order mark


def test_host_name_complaints() -> None:
    with pytest.raises(configargparse.ArgumentTypeError, match=r"^not valid UTF-8 text$"):
        _minechat.settings.host_name("h\udcff")
    with pytest.raises(configargparse.ArgumentTypeError, match="only an IPv6 address goes in brackets"):
        _minechat.settings.host_name("[127.0.0.1]")
    with pytest.raises(configargparse.ArgumentTypeError, match="only an IPv6 address goes in brackets"):
        _minechat.settings.host_name("::1]")
    assert _minechat.settings.host_name("EXAMPLE.org") == "EXAMPLE.org"
    assert _minechat.settings.is_ip_address("127.0.0.1") and not _minechat.settings.is_ip_address(
        "127.0.0.1", version=6
    )


# --- the service manager -----------------------------------------------------------------------


def test_odd_notify_socket_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="_minechat.systemd")
    assert _minechat.systemd.parse_notify_address("vsock:2:1") is None
    assert [record.getMessage() for record in caplog.records] == [
        "NOTIFY_SOCKET 'vsock:2:1' is neither a path nor an abstract name; not notifying"
    ]


@needs_af_unix
def test_notifier_failures_are_logged_with_their_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="_minechat.systemd")
    with _minechat.systemd.ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}) as service:
        service.ready()
    assert caplog.records[0].getMessage() == ("cannot notify the service manager: No such file or directory")
    caplog.clear()

    def no_socket(*args: object) -> socket.socket:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(socket, "socket", no_socket)
    with _minechat.systemd.ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}) as service:
        service.ready()
    assert [record.getMessage() for record in caplog.records] == [
        "cannot open a socket to the service manager: Too many open files"
    ]


@needs_af_unix
def test_notifier_sends_assignments_in_one_datagram_and_long_statuses(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        with _minechat.systemd.ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
            service.notify("A=1", "B=2")
            service.status("s" * 150)
        assert sock.recv(1024) == b"A=1\nB=2"
        assert sock.recv(1024) == b"STATUS=" + b"s" * 150


def test_notifier_watchdog_is_for_this_process_by_default() -> None:
    environ = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert _minechat.systemd.ServiceNotifier(environ).watchdog_period == 3.0
    assert _minechat.systemd.ServiceNotifier(environ, pid=os.getpid() + 1).watchdog_period is None


# --- signals -------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_signal_catcher_catches_a_real_signal() -> None:
    with _minechat.shutdown.SignalCatcher() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.wait(), WAIT)
        assert signals.received == signal.SIGTERM
        assert signals.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# --- the receiving connection ---------------------------------------------------------------------


async def test_receiving_connection_pauses_and_resumes_only_while_open() -> None:
    sink = Sink()
    connection = chat_io.ReceivingConnection(sink)
    connection.pause(True)  # not connected yet: nothing to pause
    transport = PausableTransport()
    connection.connection_made(transport)
    assert sink.connection is connection
    connection.pause(True)
    connection.pause(False)
    transport.closing = True
    connection.pause(True)
    assert transport.calls == ["pause", "resume"]


async def test_leaving_the_receiver_closes_the_connection(server: FakeMinechatServer) -> None:
    async with open_receiver("127.0.0.1", server.read_port, Sink()):
        await server.wait_until(lambda: len(server.readers) == 1)
    await server.wait_until(lambda: not server.readers)


# --- odds and ends ----------------------------------------------------------------------------------


def test_parse_account_quotes_what_it_got() -> None:
    with pytest.raises(chat_io.ProtocolError) as caught:
        _minechat.dialogue.parse_account(b"[]\n")
    assert str(caught.value) == 'expected account details from the server, got "[]"'


def test_a_fresh_secret_filter_hides_what_it_is_taught() -> None:
    secrets = _minechat.output.SecretFilter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s", ("abc",), None)
    assert secrets.filter(record) and record.getMessage() == "token abc"
    secrets.secrets.add("abc")
    assert secrets.filter(record) and record.getMessage() == "token <token>"


def test_keepalive_without_any_idle_option(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TCP_KEEPIDLE", "TCP_KEEPALIVE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "SIO_KEEPALIVE_VALS"):
        monkeypatch.delattr(socket, name, raising=False)
    sock = FakeSocket()
    chat_io.enable_keepalive(sock)  # type: ignore[arg-type]
    assert sock.calls == [("setsockopt", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]


def test_dotenv_byte_order_mark_counts_only_at_the_start_of_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"HOST=h.example\n\xef\xbb\xbfNICKNAME=Eve\n")
    assert set(_minechat.settings.load_environment({}, tmp_path)) == {"HOST", "\ufeffNICKNAME"}


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


@pytest.mark.parametrize(("value", "shown"), [("h\udcff", "h\\xff"), ("h\ud800", "h\\ud800"), ("a\x1b", "a\\x1b")])
def test_show_value_escapes_undecodable_bytes(value: str, shown: str) -> None:
    assert _minechat.settings.show_value(value) == shown
