"""The posting dialogue and its outbox, without sockets: exact bytes in, exact bytes and events out."""

from __future__ import annotations

import pytest

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import chat_io
from _minechat.dialogue import Account, parse_account
from chat_io import ProtocolError


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


def test_parse_account_quotes_what_it_got() -> None:
    with pytest.raises(chat_io.ProtocolError) as caught:
        _minechat.dialogue.parse_account(b"[]\n")
    assert str(caught.value) == 'expected account details from the server, got "[]"'
