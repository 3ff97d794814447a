"""A chat line that would read as one of the reader's own notes is written so that it cannot."""

from __future__ import annotations

from pathlib import Path

from _minechat.backlog import read_backlog
from _minechat.stamping import LineStamper

S = "[27.11.26 10:00]"
FORGED = b"*** connection lost: the server closed the connection; next try in 0.4 s"


def test_a_chat_line_starting_with_the_note_mark_is_not_a_note() -> None:
    text = LineStamper().feed(FORGED + b"\nEve: *** stays\n", S)
    assert (
        text
        == f"{S} \\x2a** connection lost: the server closed the connection; next try in 0.4 s\n{S} Eve: *** stays\n"
    )


def test_the_mark_is_escaped_only_where_a_line_starts() -> None:
    stamper = LineStamper(max_piece=8)
    text = stamper.feed(b"0123456789***", S) + stamper.feed(b"\n***\n", S)
    assert text == f"{S} 0123456789***\n{S} \\x2a**\n"
    assert LineStamper(max_piece=8).feed(FORGED[:20], S).startswith(f"{S} \\x2a** connection")


def test_the_backlog_shows_such_a_line_as_chat(tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    history.write_text(LineStamper().feed(FORGED + b"\n", S) + f"{S} *** connected to h:5000\n", encoding="utf-8")
    assert read_backlog([history], 10, "[%d.%m.%y %H:%M]") == [
        f"{S} \\x2a** connection lost: the server closed the connection; next try in 0.4 s"
    ]
