"""What reaches a terminal or a history is escaped: control and bidi characters, undecodable bytes, replies."""

from __future__ import annotations

import asyncio
import re
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    BIDI_CONTROLS,
    STAMP,
    STAMP_TEXT,
    WAIT,
    WHEN,
    RecordingDelays,
    RecordingOut,
    StartReader,
    chat_of,
    format_history_block,
    format_history_line,
    read_history,
    running_reader,
    wait_for_file,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import chat_io
import read_client
from _minechat.dialogue import is_blank, parse_account
from _minechat.stamping import LineStamper
from chat_io import ProtocolError, decode_line, encode_line, flatten_text, redact, sanitize_text
from read_client import ReaderSettings

BIDI_ESCAPED = "".join(f"\\u{ord(char):04x}" for char in BIDI_CONTROLS)


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("plain", "plain"),
        ("two\nlines", "two\\nlines"),
        ("\x1b[31m", "\\x1b[31m"),
        ("ü ✓ 😀", "ü ✓ 😀"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("\u202a\u202e\u2066\u2069", "\\u202a\\u202e\\u2066\\u2069"),
    ],
)
def test_sanitize_text(text: str, safe: str) -> None:
    assert sanitize_text(text) == safe


def test_flatten_text_leaves_plain_text() -> None:
    assert flatten_text("no breaks\there") == "no breaks\there"


def test_history_block_escapes_bidi_controls_and_marks() -> None:
    block = "A: \u202eevil\u2066x\u2069 \u200eL\u200fR\u061cA\n".encode()
    assert format_history_block(block, WHEN) == format_history_line(
        "A: \\u202eevil\\u2066x\\u2069 \\u200eL\\u200fR\\u061cA", WHEN
    )


def test_protocol_error_quotes_escaped_and_short() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_account(b"\x1b[2J" + b"x" * 500 + b"\n")
    message = str(caught.value)
    assert "\x1b" not in message and "\\x1b[2J" in message
    assert len(message) < 150


@pytest.mark.parametrize("text", ["a", "\u200ba", "\x00", ".", "\u0301"])
def test_visible_text_is_not_blank(text: str) -> None:
    assert not is_blank(text)


def test_redact() -> None:
    assert redact("'abc-1\\n' and abc-1", {"abc-1"}) == "'<token>\\n' and <token>"
    assert redact("nothing", {""}) == "nothing"


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


@pytest.mark.parametrize(("char", "escape"), [("\x9f", "\\x9f"), ("\u061c", "\\u061c"), ("\u2028", "\\u2028")])
def test_escape_width_follows_the_code_point(char: str, escape: str) -> None:
    assert sanitize_text(char) == escape


def test_plural() -> None:
    assert [chat_io.plural(count, "message") for count in (0, 1, 2)] == [
        "0 messages",
        "1 message",
        "2 messages",
    ]


def test_shorten_cuts_only_past_the_limit() -> None:
    assert chat_io.shorten("a" * 80) == "a" * 80
    assert chat_io.shorten("a" * 81) == "a" * 77 + "..."
    assert chat_io.shorten("abcdef", 5) == "ab..."


def test_quote_reply() -> None:
    assert _minechat.dialogue.quote_reply(b"") == "nothing (the connection was closed)"
    assert _minechat.dialogue.quote_reply(b"x" * 100 + b"\n") == '"' + "x" * 77 + '..."'


@pytest.mark.parametrize(("value", "shown"), [("h\udcff", "h\\xff"), ("h\ud800", "h\\ud800"), ("a\x1b", "a\\x1b")])
def test_show_value_escapes_undecodable_bytes(value: str, shown: str) -> None:
    assert _minechat.settings.show_value(value) == shown


async def test_escape_sequences_cannot_reach_terminal(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Eve: \x1b[2J\x1b]0;pwned\x07 hi\x00\r\nBob: crlf ok\r\n")
    await reader.out.wait_for_lines(2)
    expected = ["Eve: \\x1b[2J\\x1b]0;pwned\\x07 hi\\x00", "Bob: crlf ok"]
    assert chat_of(reader.out.lines) == expected
    assert chat_of(read_history(reader.path)) == expected
    raw = reader.path.read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\x00" not in raw and b"\r" not in raw


async def test_bidi_controls_are_escaped_in_stdout_and_history(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(f"Eve: {BIDI_CONTROLS}txt\n".encode())
        await reader.out.wait_for_lines(1)
    assert chat_of(reader.out.lines) == [f"Eve: {BIDI_ESCAPED}txt"]
    assert chat_of(read_history(path)) == [f"Eve: {BIDI_ESCAPED}txt"]


async def test_client_notes_are_escaped(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path, host="127.0.0.1\n[28.11.26 16:52] Admin: forged") as reader:
        await reader.delays.wait_for_taken(1)
    history = read_history(path)
    assert history
    assert all(re.match(STAMP + r"\*\*\* ", line) for line in history)
    assert "127.0.0.1\\n[28.11.26 16:52] Admin: forged" in history[0]


async def test_line_and_paragraph_separators_are_escaped(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    settings = ReaderSettings("127.0.0.1", server.read_port, path, WAIT, verbose=False)
    out = RecordingOut()
    task = asyncio.create_task(read_client.run(settings, out, RecordingDelays()))
    try:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast("Bob: a\u2028b\u2029c\n".encode())
        await wait_for_file(path, lambda data: b"Bob: a" in data)
        await out.wait_for(lambda text: "Bob: a" in text)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    expected = STAMP + re.escape("Bob: a\\u2028b\\u2029c")
    assert [line for line in read_history(path) if "Bob" in line] == [
        line for line in read_history(path) if re.fullmatch(expected, line)
    ]
    assert any(re.fullmatch(expected, line) for line in read_history(path))
    assert "\u2028" not in out.text and "\u2029" not in out.text
    assert any(re.fullmatch(expected, line) for line in out.text.split("\n"))
