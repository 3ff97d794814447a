"""The pure protocol functions of chat_io, from tables of exact bytes and text, without sockets."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import stat
import sys
from pathlib import Path

import configargparse
import fake_server
import pytest
from fake_server import ACK, GREETING, NICKNAME_PROMPT, WELCOME
from helpers import WHEN

from _minechat.dialogue import Account, encode_post, is_blank, parse_account
from _minechat.settings import Setting, host_name, load_environment, text_value
from _minechat.shutdown import SignalCatcher, cancel_and_wait, run_until_signal
from _minechat.stamping import format_history_block, format_history_line, format_status_line
from chat_io import (
    MAX_LINE_BYTES,
    ChatError,
    ConnectionFailed,
    FileError,
    LineFramer,
    ProtocolError,
    UnknownTokenError,
    backoff,
    check_token_path,
    decode_line,
    describe_error,
    encode_line,
    exit_code_for,
    flatten_text,
    format_address,
    is_retryable,
    load_token,
    open_connection,
    redact,
    sanitize_text,
    save_token,
)


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


def test_describe_error_names_dns_failures() -> None:
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == "Name or service not known"
    assert describe_error(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")) == os.strerror(111)


def test_flatten_text_leaves_plain_text() -> None:
    assert flatten_text("no breaks\there") == "no breaks\there"


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


def test_history_block_escapes_bidi_controls_and_marks() -> None:
    block = "A: \u202eevil\u2066x\u2069 \u200eL\u200fR\u061cA\n".encode()
    assert format_history_block(block, WHEN) == format_history_line(
        "A: \\u202eevil\\u2066x\\u2069 \\u200eL\\u200fR\\u061cA", WHEN
    )


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


def test_backoff_grows_to_cap_without_jitter() -> None:
    delays = backoff(initial=0.5, factor=2, cap=4, jitter=0)
    assert [next(delays) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_backoff_jitter_only_shortens() -> None:
    delays = backoff(initial=1, factor=2, cap=60, jitter=0.25, rng=random.Random(7))
    taken = [next(delays) for _ in range(10)]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert all(0.75 * ceiling <= delay <= ceiling for delay, ceiling in zip(taken, ceilings, strict=True))
    assert len(set(taken[-4:])) == 4


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (asyncio.TimeoutError(), True),
        (asyncio.IncompleteReadError(b"", 1), True),
        (ConnectionFailed("gone"), True),
        (FileError("disk full"), False),
        (ProtocolError("odd"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable(error: BaseException, retry: bool) -> None:
    assert is_retryable(error) is retry


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConnectionFailed("x"), 3),
        (ProtocolError("x"), 4),
        (UnknownTokenError("x"), 5),
        (FileError("x"), 6),
        (ChatError("x"), 1),
    ],
)
def test_exit_codes(error: ChatError, code: int) -> None:
    assert exit_code_for(error) == code


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('HOST="from-dotenv"\nTOKEN=abc\nEMPTY\n')
    merged = load_environment({"HOST": "from-env"}, tmp_path)
    assert merged["HOST"] == Setting("from-env", "the environment")
    assert merged["TOKEN"] == Setting("abc", str(tmp_path / ".env"))
    assert "EMPTY" not in merged


def test_no_dotenv_is_fine(tmp_path: Path) -> None:
    assert load_environment({"A": "1"}, tmp_path) == {"A": Setting("1", "the environment")}


def test_empty_values_are_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOST=\nNICKNAME=''\nTOKEN=abc\n")
    merged = load_environment({"TOKEN": "", "MESSAGE": ""}, tmp_path)
    assert merged == {"TOKEN": Setting("abc", str(tmp_path / ".env"))}


def test_dotenv_lines_not_utf8_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A comment and a value saved in cp1251, and a UTF-8 byte-order mark as Notepad writes it.
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbf# \xcf\xf0\xe8\nHOST=h.example\nNICKNAME=\xc5\xe2\xe0\nTOKEN=abc\n")
    merged = load_environment({}, tmp_path)
    assert {key: setting.value for key, setting in merged.items()} == {"HOST": "h.example", "TOKEN": "abc"}
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"skipping line {number} of {tmp_path / '.env'}: it is not UTF-8 text; save the file as UTF-8"
        for number in (1, 3)
    ]


def test_a_folder_named_dotenv_is_not_read(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()  # a virtual environment, say
    assert load_environment({}, tmp_path) == {}


def test_unreadable_dotenv_is_a_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("HOST=h.example\n")

    def refuse(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(FileError, match=f"cannot read {re.escape(str(tmp_path / '.env'))}: Permission denied"):
        load_environment({}, tmp_path)


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("minechat.dvmn.org", "minechat.dvmn.org"),
        ("minechat.dvmn.org.", "minechat.dvmn.org."),
        (" localhost ", "localhost"),
        ("пример.рф", "пример.рф"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("a" * 63 + ".org", "a" * 63 + ".org"),
    ],
)
def test_host_name_accepts(value: str, host: str) -> None:
    assert host_name(value) == host


@pytest.mark.parametrize(
    "value",
    ["minechat..dvmn.org", ".minechat.dvmn.org", "a" * 64 + ".org", "", " ", "[minechat.dvmn.org]", "[::1", "h\udcff"],
)
def test_host_name_refuses(value: str) -> None:
    with pytest.raises(configargparse.ArgumentTypeError):
        host_name(value)


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("minechat.dvmn.org", 5000, "minechat.dvmn.org:5000"),
        ("127.0.0.1", 1, "127.0.0.1:1"),
        ("::1", 5000, "[::1]:5000"),
    ],
)
def test_format_address(host: str, port: int, address: str) -> None:
    assert format_address(host, port) == address


def test_text_value_refuses_undecodable_bytes() -> None:
    assert text_value("café") == "café"
    with pytest.raises(configargparse.ArgumentTypeError, match="not valid UTF-8 text"):
        text_value("caf\udce9")


async def test_cancel_and_wait_survives_a_swallowed_cancel() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        # What asyncio.wait_for does before Python 3.12 when its inner call completes as it is cancelled.
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_run_until_signal_returns_none_and_raises_work_errors() -> None:
    async def fail() -> None:
        raise ProtocolError("odd reply")

    async def succeed() -> None:
        return None

    with SignalCatcher() as signals:
        assert await run_until_signal(succeed(), signals) is None
        with pytest.raises(ProtocolError):
            await run_until_signal(fail(), signals)


@pytest.mark.parametrize(
    ("raw", "account"),
    [
        (b'{"nickname": "Focused Loyd", "account_hash": "5210a154"}\n', Account("Focused Loyd", "5210a154")),
        ('{"nickname": "Boring Ева", "account_hash": "t"}\n'.encode(), Account("Boring Ева", "t")),
        (b"null\n", None),
    ],
)
def test_parse_account(raw: bytes, account: Account | None) -> None:
    assert parse_account(raw) == account


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\n",
        b"\n",
        b"[]\n",
        b'{"nickname": "x"}\n',
        b'{"nickname": 1, "account_hash": "t"}\n',
        b"\xff\n",
        b"Enter preferred nickname below:\n",
    ],
)
def test_parse_account_rejects_anything_else(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="expected account details from the server, got "):
        parse_account(raw)


def test_protocol_error_quotes_escaped_and_short() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_account(b"\x1b[2J" + b"x" * 500 + b"\n")
    message = str(caught.value)
    assert "\x1b" not in message and "\\x1b[2J" in message
    assert len(message) < 150


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


@pytest.mark.parametrize("text", ["a", "\u200ba", "\x00", ".", "\u0301"])
def test_visible_text_is_not_blank(text: str) -> None:
    assert not is_blank(text)


def test_redact() -> None:
    assert redact("'abc-1\\n' and abc-1", {"abc-1"}) == "'<token>\\n' and <token>"
    assert redact("nothing", {""}) == "nothing"


def test_protocol_strings_match_the_record() -> None:
    # Typed from ../shared/minechat-protocol.md twice: here, and in the fake server.
    assert (GREETING, NICKNAME_PROMPT, WELCOME, ACK) == (
        fake_server.GREETING,
        fake_server.NICKNAME_PROMPT,
        fake_server.WELCOME,
        fake_server.ACK,
    )
    assert ACK == b"Message send. Write more, end message with an empty line.\n"


def test_token_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "token.txt"
    assert load_token(path) is None
    path.write_text("\n")  # an empty file, as `touch` leaves it (a token there would be kept)
    path.chmod(0o644)
    save_token(path, "new-token")
    assert path.read_text() == "new-token\n"
    assert load_token(path) == "new-token"
    assert [p.name for p in tmp_path.iterdir()] == ["token.txt"]
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_token_file_errors_are_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="cannot save the token"):
        save_token(tmp_path / "missing" / "token.txt", "t")
    with pytest.raises(FileError, match="choose another --token_path"):
        check_token_path(tmp_path / "missing" / "token.txt")
    with pytest.raises(FileError, match="cannot read the token file"):
        load_token(tmp_path)


async def test_connection_has_keepalive_and_closes(server: fake_server.FakeMinechatServer) -> None:
    async with open_connection("127.0.0.1", server.read_port) as (_, writer):
        sock = writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert writer.is_closing()
