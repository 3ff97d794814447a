"""The posting dialogue and its outbox, without sockets: exact bytes in, exact bytes and events out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fake_server import ACK, GREETING, NICKNAME_PROMPT, WELCOME, FakeMinechatServer
from helpers import ACCOUNT, TOKEN, RecordingDelays, StdinBytes, settings_for, texts_of

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.outbox
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import chat_io
import send_client
from _minechat.dialogue import Account, Closed, PostingDialogue, parse_account
from _minechat.outbox import Outbox
from chat_io import ConnectionFailed, ProtocolError, UnknownTokenError

NEW_ACCOUNT = f'{{"nickname": "Boring Eve", "account_hash": "{TOKEN}"}}\n'.encode()


def converse(dialogue: PostingDialogue, feeds: list[bytes]) -> tuple[bytes, list[str]]:
    """Feed the server's bytes in the given pieces; return everything sent and the names of the events."""
    sent = b"".join(dialogue.data_to_send())
    events: list[str] = []
    for data in feeds:
        dialogue.receive_data(data)
        while (event := dialogue.next_event()) is not None:
            events.append(type(event).__name__)
            if isinstance(event, Closed):
                break
        sent += b"".join(dialogue.data_to_send())
    return sent, events


def make_dialogue(messages: list[str], token: str | None = TOKEN, nickname: str | None = None) -> PostingDialogue:
    outbox = Outbox()
    for message in messages:
        outbox.add(message)
    return PostingDialogue(outbox, token, nickname, "the token file token.txt")


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


LOGIN = [GREETING, ACCOUNT + WELCOME]


LOGIN_EVENTS = ["Greeted", "LoggedIn", "Welcomed"]


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


@pytest.mark.parametrize(
    ("messages", "feeds", "sent", "events"),
    [
        pytest.param(["hi"], [*LOGIN, ACK], f"{TOKEN}\nhi\n\n".encode(), [*LOGIN_EVENTS, "Acknowledged"], id="post"),
        pytest.param(
            ["Привет"],
            byte_by_byte(GREETING + ACCOUNT + WELCOME + ACK),
            f"{TOKEN}\nПривет\n\n".encode(),
            [*LOGIN_EVENTS, "Acknowledged"],
            id="byte-by-byte",
        ),
        pytest.param(
            ["a", "b\nBoring Eve: forged", "c\x1b[2J"],
            [*LOGIN, ACK * 3],
            f"{TOKEN}\na\n\nb Boring Eve: forged\n\nc\\x1b[2J\n\n".encode(),
            [*LOGIN_EVENTS, "Acknowledged", "Acknowledged", "Acknowledged"],
            id="pipelined",
        ),
        pytest.param([], [*LOGIN, b""], f"{TOKEN}\n".encode(), [*LOGIN_EVENTS, "Closed"], id="idle-close"),
        pytest.param(["hi"], [GREETING, ACCOUNT], f"{TOKEN}\n".encode(), ["Greeted", "LoggedIn"], id="no-post-early"),
    ],
)
def test_login_dialogue(messages: list[str], feeds: list[bytes], sent: bytes, events: list[str]) -> None:
    assert converse(make_dialogue(messages), feeds) == (sent, events)


def test_registration_dialogue_sends_one_newline_then_the_nickname() -> None:
    dialogue = make_dialogue([], token=None, nickname="Eve")
    sent, events = converse(dialogue, [GREETING, NICKNAME_PROMPT, NEW_ACCOUNT + WELCOME])
    assert sent == b"\nEve\n"
    assert events == ["Greeted", "Prompted", "Registered", "Welcomed"]


def test_new_account_is_handed_out_before_the_next_line_is_judged() -> None:
    # The account reply and a bad welcome arrive together: the account must come out first, to be saved.
    dialogue = make_dialogue([], token=None, nickname="Eve")
    converse(dialogue, [GREETING, NICKNAME_PROMPT])
    dialogue.receive_data(NEW_ACCOUNT + b"<html>\n")
    event = dialogue.next_event()
    assert type(event).__name__ == "Registered"
    assert event.account.token == TOKEN  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match='expected the welcome line from the server, got "<html>"'):
        dialogue.next_event()


@pytest.mark.parametrize(
    ("token", "feeds", "sent", "error", "message"),
    [
        pytest.param(
            TOKEN,
            [GREETING, b"null\n" + NICKNAME_PROMPT],
            f"{TOKEN}\n".encode(),
            UnknownTokenError,
            "does not know the token from the token file token.txt",
            id="unknown-token-sends-nothing-more",
        ),
        pytest.param(
            TOKEN,
            [b"Eva: hello\n"],
            b"",
            ProtocolError,
            'got "Eva: hello"; is this the reading port\\? Posts go to port 5050',
            id="chat-instead-of-greeting",
        ),
        pytest.param(
            TOKEN,
            [GREETING, b"<html>\x1b[31m\n"],
            f"{TOKEN}\n".encode(),
            ProtocolError,
            r'expected account details from the server, got "<html>\\x1b\[31m"',
            id="garbage-account",
        ),
        pytest.param(
            TOKEN,
            [b"Hello %user", b""],
            b"",
            ConnectionFailed,
            "closed the connection while we waited for the greeting",
            id="eof-mid-greeting",
        ),
        pytest.param(
            TOKEN,
            [*LOGIN, b"Message sent!\n"],
            f"{TOKEN}\nhi\n\n".encode(),
            ProtocolError,
            'expected the acknowledgement of message 1 from the server, got "Message sent!"',
            id="wrong-ack",
        ),
        pytest.param(
            TOKEN,
            [*LOGIN, b""],
            f"{TOKEN}\nhi\n\n".encode(),
            ConnectionFailed,
            "closed the connection while we waited for the acknowledgement of message 1",
            id="eof-while-ack-due",
        ),
        pytest.param(
            None,
            [GREETING, NICKNAME_PROMPT, b"null\n"],
            b"\nEve\n",
            ProtocolError,
            "answered null to a registration",
            id="null-registration",
        ),
    ],
)
def test_dialogue_errors(
    token: str | None, feeds: list[bytes], sent: bytes, error: type[Exception], message: str
) -> None:
    dialogue = make_dialogue(["hi"], token=token, nickname=None if token else "Eve")
    *before, last = feeds
    assert converse(dialogue, before)[0] == sent
    dialogue.receive_data(last)
    with pytest.raises(error, match=message):
        while dialogue.next_event() is not None:
            pass
    assert dialogue.data_to_send() == []


def test_ack_when_none_is_due_is_a_protocol_error() -> None:
    dialogue = make_dialogue([])
    converse(dialogue, LOGIN)
    dialogue.receive_data(ACK)
    with pytest.raises(ProtocolError, match="when no reply was due"):
        dialogue.next_event()


@pytest.mark.parametrize(
    ("feeds", "waiting_for"),
    [
        ([], "the greeting"),
        ([GREETING], "the login reply"),
        ([GREETING, ACCOUNT], "the welcome line"),
        ([*LOGIN], "the acknowledgement of message 1"),
        ([*LOGIN, ACK], "the acknowledgement of message 2"),
        ([*LOGIN, ACK * 2], None),
    ],
)
def test_waiting_for_names_the_reply_due(feeds: list[bytes], waiting_for: str | None) -> None:
    dialogue = make_dialogue(["one", "two"])
    converse(dialogue, feeds)
    assert dialogue.waiting_for == waiting_for


def test_a_new_connection_resends_only_what_was_not_acknowledged() -> None:
    outbox = Outbox()
    for text in ("one", "two", "three"):
        outbox.add(text)
    first = PostingDialogue(outbox, TOKEN)
    sent, _ = converse(first, [*LOGIN, ACK])
    assert sent == f"{TOKEN}\none\n\ntwo\n\nthree\n\n".encode()
    outbox.add("four")  # arrives while the connection is down
    assert outbox.rewind() == 2
    second = PostingDialogue(outbox, TOKEN)
    sent, events = converse(second, [*LOGIN, ACK * 3])
    assert sent == f"{TOKEN}\ntwo\n\nthree\n\nfour\n\n".encode()
    assert events == [*LOGIN_EVENTS, "Acknowledged", "Acknowledged", "Acknowledged"]
    assert (outbox.acknowledged, outbox.repeated, len(outbox)) == (4, 2, 0)  # "two" and "three" went twice


def test_outbox_fills_by_count_or_bytes_and_drains_to_half() -> None:
    outbox = Outbox(max_posts=4, max_bytes=1000)
    for number in range(4):
        assert not outbox.full
        outbox.add(f"post {number}")
    assert outbox.full and not outbox.roomy
    outbox.take_unsent()
    outbox.acknowledge()
    assert not outbox.full and not outbox.roomy
    outbox.acknowledge()
    assert outbox.roomy
    big = Outbox(max_posts=100, max_bytes=1000)
    big.add("x" * 2000)  # one post always fits, however long
    assert big.full


def test_outbox_counts_bytes_back_as_posts_are_acknowledged() -> None:
    outbox = _minechat.outbox.Outbox(max_posts=100, max_bytes=10)
    outbox.add("aaaa")  # six bytes on the wire
    outbox.add("bbbb")
    assert outbox.full
    outbox.take_unsent()
    outbox.acknowledge()
    assert not outbox.full and not outbox.roomy
    outbox.acknowledge()
    assert outbox.roomy and not outbox.full


def test_dialogue_needs_a_token_or_a_nickname_and_names_the_token() -> None:
    with pytest.raises(ValueError, match=r"^a token to log in with or a nickname to register is needed$"):
        _minechat.dialogue.PostingDialogue(_minechat.outbox.Outbox(), None, None)
    dialogue = _minechat.dialogue.PostingDialogue(_minechat.outbox.Outbox(), TOKEN)
    dialogue.receive_data(GREETING + b"null\n")
    dialogue.next_event()
    with pytest.raises(UnknownTokenError, match=r"^the server does not know the token from the token; "):
        dialogue.next_event()


def test_outbox_counts_every_rewind() -> None:
    outbox = _minechat.outbox.Outbox()
    outbox.add("one")
    outbox.add("two")
    outbox.take_unsent()
    assert outbox.rewind() == 2
    assert outbox.rewind() == 0  # a connection lost before the welcome sends nothing
    assert outbox.rewound == 2


def test_outbox_starts_empty_in_bytes() -> None:
    outbox = _minechat.outbox.Outbox(max_posts=10, max_bytes=6)
    outbox.add("aaa")  # five bytes on the wire
    assert not outbox.full


async def test_a_full_outbox_is_logged(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    sender = send_client.make_sender(settings, StdinBytes(b"a\nb\nc\n"), RecordingDelays())  # type: ignore[arg-type]
    sender.outbox.max_posts = 1
    await sender.run()
    assert texts_of(server) == ["a", "b", "c"]
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("the outbox is full; stdin waits for acknowledgements") == 2
