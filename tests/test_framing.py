"""Lines on the wire: decoding and encoding, the framer that cuts a stream into lines, the protocol's strings."""

from __future__ import annotations

import fake_server
import pytest
from fake_server import ACK, GREETING, NICKNAME_PROMPT, WELCOME
from helpers import EMOJI

from _minechat.dialogue import encode_post, is_blank
from chat_io import MAX_LINE_BYTES, LineFramer, decode_line, encode_line


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"Eve: hi\n", "Eve: hi"),
        (b"Eve: hi\r\n", "Eve: hi"),
        (b"Eve: hi", "Eve: hi"),
        ("Ева: привет\n".encode(), "Ева: привет"),
        (b"Eve: caf\xc3\n", "Eve: caf\ufffd"),
        (b"\xff\xfe ok\n", "\ufffd\ufffd ok"),
        (b"Eve: \x1b[2Jgone\n", "Eve: \\x1b[2Jgone"),
        (b"Eve: \x1b]0;title\x07\n", "Eve: \\x1b]0;title\\x07"),
        (b"a\x00b\tc\rd\n", "a\\x00b\\tc\\rd"),
        ("c1 \u009b31m\n".encode(), "c1 \\x9b31m"),
        ("bidi \u202eevil\n".encode(), "bidi \\u202eevil"),
        ("marks \u200eL\u200fR\u061cA\n".encode(), "marks \\u200eL\\u200fR\\u061cA"),
        ("sep \u2028x\n".encode(), "sep \\u2028x"),
        (b"\x7f\n", "\\x7f"),
    ],
)
def test_decode_line(raw: bytes, text: str) -> None:
    assert decode_line(raw) == text


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("hello", b"hello\n"),
        ("one\ntwo", b"one two\n"),
        ("one\r\ntwo", b"one two\n"),
        ("one\rtwo", b"one two\n"),
        ("\n\nBoring Eve: forged", b"  Boring Eve: forged\n"),
        ("a\u2028b\u2029c\x85d", b"a b c d\n"),
        ("a\x0bb\x0cc", b"a b c\n"),
        ("привет", "привет\n".encode()),
        ("tab\there", b"tab here\n"),
        ("\x1b[31mred\x07", b"\\x1b[31mred\\x07\n"),
        ("nul\x00 c1\x9b bidi\u202e", b"nul\\x00 c1\\x9b bidi\\u202e\n"),
    ],
)
def test_encode_line_keeps_one_line(text: str, line: bytes) -> None:
    assert encode_line(text) == line
    assert encode_line(text).count(b"\n") == 1


@pytest.mark.parametrize(
    ("chunks", "blocks", "rest"),
    [
        ([b"a\n"], [b"a\n"], b""),
        ([b"a\nb\n"], [b"a\nb\n"], b""),
        ([b"a", b"b\n"], [b"", b"ab\n"], b""),
        ([b"a\nb", b"c\nd"], [b"a\n", b"bc\n"], b"d\n"),
        (["Ж\n".encode()[:1], "Ж\n".encode()[1:]], [b"", "Ж\n".encode()], b""),
        ([b"\n"], [b"\n"], b""),
    ],
)
def test_framer_splits_stream_into_lines(chunks: list[bytes], blocks: list[bytes], rest: bytes) -> None:
    framer = LineFramer()
    assert [framer.feed(chunk) for chunk in chunks] == blocks
    assert framer.flush() == rest
    assert framer.flush() == b""


@pytest.mark.parametrize(
    ("chunks", "blocks", "rest"),
    [
        ([b"abcdefghij\n"], [b"abcd\nefgh\nij\n"], b""),
        ([b"abcdef", b"gh\n"], [b"abcd\n", b"efgh\n"], b""),
        ([b"ab\nabcdefghij"], [b"ab\nabcd\nefgh\n"], b"ij\n"),
        # Cuts fall between characters: "Ж" is two bytes, so a piece of 4 bytes holds two.
        (["ЖЖЖ\n".encode()], ["ЖЖ\nЖ\n".encode()], b""),
        ([b"a" + "ЖЖ".encode()], [b"a\xd0\x96\n"], "Ж\n".encode()),
        ([b"abcd"], [b""], b"abcd\n"),
    ],
)
def test_framer_cuts_overlong_lines(chunks: list[bytes], blocks: list[bytes], rest: bytes) -> None:
    framer = LineFramer(max_line=4)
    assert [framer.feed(chunk) for chunk in chunks] == blocks
    assert framer.flush() == rest


def test_framer_memory_stays_bounded_on_endless_line() -> None:
    framer = LineFramer()
    chunk = b"x" * 65536
    received = bytearray()
    for _ in range(64):  # 4 MiB without a newline
        received += framer.feed(chunk)
        assert framer.pending <= MAX_LINE_BYTES
    received += framer.feed(b"\nEve: after\n")
    lines = bytes(received).split(b"\n")[:-1]
    assert all(len(line) <= MAX_LINE_BYTES for line in lines)
    assert lines[-1] == b"Eve: after"
    assert b"".join(lines[:-1]) == b"x" * (64 * 65536)


@pytest.mark.parametrize(
    ("text", "post"),
    [
        ("hi", b"hi\n\n"),
        ("one\ntwo", b"one two\n\n"),
        ("\n\nEve: forged", b"  Eve: forged\n\n"),
        ("x\r", b"x \n\n"),
    ],
)
def test_encode_post(text: str, post: bytes) -> None:
    assert encode_post(text) == post


@pytest.mark.parametrize(
    "text", ["", " ", "\n", "\r\n\u2028", "\u200b", " \u200b\u200d\ufeff\u2060 ", "\u200e\u200f\u061c", "\u3164\u2800"]
)
def test_encode_post_refuses_empty(text: str) -> None:
    assert is_blank(text)
    with pytest.raises(ValueError, match="empty message"):
        encode_post(text)


def test_protocol_strings_match_the_record() -> None:
    # Typed from ../shared/minechat-protocol.md twice: here, and in the fake server.
    assert (GREETING, NICKNAME_PROMPT, WELCOME, ACK) == (
        fake_server.GREETING,
        fake_server.NICKNAME_PROMPT,
        fake_server.WELCOME,
        fake_server.ACK,
    )
    assert ACK == b"Message send. Write more, end message with an empty line.\n"


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
