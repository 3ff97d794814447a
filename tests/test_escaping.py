"""What reaches a terminal or a history is escaped: control and bidi characters, undecodable bytes, replies."""

from __future__ import annotations

import pytest
from helpers import WHEN

from _minechat.dialogue import is_blank, parse_account
from _minechat.stamping import format_history_block, format_history_line
from chat_io import ProtocolError, flatten_text, redact, sanitize_text


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
