"""chat_io behaviours that mutation testing found unchecked: each test here kills mutants the rest let live."""

from __future__ import annotations

import logging
import socket
import sys
from datetime import datetime
from pathlib import Path

import configargparse
import pytest
from fake_server import FakeMinechatServer

import chat_io
from chat_io import (
    MAX_PORT,
    SECRETS,
    LineFramer,
    LineStamper,
    configure_logging,
    decode_line,
    encode_line,
    format_history_block,
    open_connection,
    open_receiver,
    port_number,
    sanitize_text,
)

STAMP = "[27.11.26 09:05]"
# Bidi embeddings, overrides and isolates, and the marks: each can reorder what a terminal shows.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
BIDI_ESCAPED = "".join(f"\\u{ord(char):04x}" for char in BIDI_CONTROLS)
EMOJI = "😀"  # four bytes in UTF-8


# --- bidi controls, in single lines and in the history ----------------------------


def test_every_bidi_control_is_escaped_in_a_single_line() -> None:
    assert sanitize_text(f"a{BIDI_CONTROLS}b") == f"a{BIDI_ESCAPED}b"
    assert decode_line(f"a{BIDI_CONTROLS}b\r\n".encode()) == f"a{BIDI_ESCAPED}b"
    assert encode_line(f"a{BIDI_CONTROLS}b") == f"a{BIDI_ESCAPED}b\n".encode()


def test_every_bidi_control_is_escaped_in_the_history() -> None:
    block = f"Eve: {BIDI_CONTROLS}\nBob: x{BIDI_CONTROLS}\n".encode()
    expected = f"{STAMP} Eve: {BIDI_ESCAPED}\n{STAMP} Bob: x{BIDI_ESCAPED}\n"
    assert LineStamper().feed(block, STAMP) == expected
    assert format_history_block(block, datetime(2026, 11, 27, 9, 5)) == expected


def test_bidi_controls_are_escaped_in_pieces_of_a_long_line_and_its_unfinished_end() -> None:
    stamper = LineStamper(max_piece=8)
    text = stamper.feed(("\u202e" * 5).encode(), STAMP)  # 15 bytes: one piece of two characters goes out
    text += stamper.flush(STAMP)
    assert text == f"{STAMP} " + "\\u202e" * 5 + "\n"


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
    text = stamper.feed(line.encode(), STAMP) + stamper.flush(STAMP)
    assert "\ufffd" not in text
    assert text == f"{STAMP} {line}\n"


def test_stamper_cut_backs_up_over_three_continuation_bytes_exactly() -> None:
    stamper = LineStamper(max_piece=4)
    # Five bytes held: the cut at 4 would fall after the first byte of the emoji, so it backs up to 1.
    assert stamper.feed(("a" + EMOJI).encode(), STAMP) == f"{STAMP} a"
    assert stamper.pending == 4
    assert stamper.flush(STAMP) == f"{EMOJI}\n"


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
    chat_io.flush_logging()
    err = capsys.readouterr().err
    assert err.endswith(" WARNING the server said 'bad <token> here'\n")
    assert "sekrit" not in err
    assert "not shown" not in err


def test_verbose_logging_shows_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(verbose=True)
    logging.getLogger("anyone").debug("dialogue")
    assert capsys.readouterr().err.endswith(" DEBUG dialogue\n")


# --- sockets ------------------------------------------------------------------------

LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux names for the keepalive options")


def assert_keepalive(sock: socket.socket) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == chat_io.KEEPALIVE_IDLE_SECONDS == 60
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == chat_io.KEEPALIVE_INTERVAL_SECONDS == 10
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == chat_io.KEEPALIVE_COUNT == 5


@LINUX_ONLY
async def test_posting_connection_sets_keepalive_idle_interval_and_count(server: FakeMinechatServer) -> None:
    async with open_connection("127.0.0.1", server.write_port) as (_, writer):
        assert_keepalive(writer.get_extra_info("socket"))


class Sink:
    def __init__(self) -> None:
        self.connection: chat_io.ReceivingConnection | None = None

    def connected(self, connection: chat_io.ReceivingConnection) -> None:
        self.connection = connection

    def received(self, data: bytes) -> None:
        pass


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
