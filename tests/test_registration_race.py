"""No account is ever lost: the token file is created exclusively, and a cut or malformed account reply is kept."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import POSIX_ONLY, WAIT, RecordingDelays, stop_with_signal
from fake_server import FakeMinechatServer
from send_support import TOKEN, read_stderr_until, run_client, settings_for, spawn_client

import chat_io
import send_client
from _minechat.dialogue import Account, Closed, Outbox, PostingDialogue, quote_reply, salvage_account
from chat_io import (
    EXIT_FILE,
    EXIT_OK,
    EXIT_PROTOCOL,
    GREETING,
    NICKNAME_PROMPT,
    WELCOME,
    ConnectionFailed,
    FileError,
    ProtocolError,
    ReplyTimeout,
)

OTHER_TOKEN = "99999999-74ca-11e9-9d4f-0242ac110002"
ROUNDS = 4


def saved_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- two saves at once: one wins, the other is refused -----------------------------------------


def save_both_at_once(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, BaseException | None]:
    """Save TOKEN and OTHER_TOKEN to path from two threads that meet once both have written their first file.

    They meet again before a rename over the final name, should either try one: a save that checks
    the file and then replaces it lets both pass the check first, as two processes at once do.
    """
    written, renaming = threading.Barrier(2, timeout=WAIT), threading.Barrier(2, timeout=WAIT)
    wrote = threading.local()
    real_write, real_replace = chat_io.write_durably, os.replace

    def write_then_meet(descriptor: int, data: bytes) -> None:
        real_write(descriptor, data)
        if not getattr(wrote, "once", False):
            wrote.once = True
            written.wait()  # each has its token on disk; neither has put it in place yet

    def meet_then_replace(source: str, target: str) -> None:
        renaming.wait()
        real_replace(source, target)

    monkeypatch.setattr(chat_io, "write_durably", write_then_meet)
    monkeypatch.setattr(os, "replace", meet_then_replace)
    outcome: dict[str, BaseException | None] = {}

    def save(token: str) -> None:
        try:
            chat_io.save_token(path, token)
            outcome[token] = None
        except BaseException as error:
            outcome[token] = error

    threads = [threading.Thread(target=save, args=(token,)) for token in (TOKEN, OTHER_TOKEN)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert len(outcome) == 2
    return outcome


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "no-hard-links"])
@pytest.mark.parametrize("placeholder", [None, b"", b" \n\n"], ids=["no-file", "empty-file", "blank-file"])
def test_two_saves_at_once_keep_one_token_and_refuse_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool, placeholder: bytes | None
) -> None:
    path = tmp_path / "token.txt"
    if placeholder is not None:
        path.write_bytes(placeholder)
        path.chmod(0o644)
    if not hard_links:  # as on a file system without them: the final name is created with O_EXCL
        monkeypatch.setattr(os, "link", lambda *_: (_ for _ in ()).throw(OSError(errno.EPERM, "no hard links")))
    outcome = save_both_at_once(path, monkeypatch)
    winners = [token for token, error in outcome.items() if error is None]
    losers = [error for error in outcome.values() if error is not None]
    assert len(winners) == 1, f"both saved, one of them over the other: {outcome}"
    [loss] = losers
    assert isinstance(loss, FileError)
    assert "holds another token now" in str(loss)
    assert path.read_text() == winners[0] + "\n"
    if sys.platform != "win32":
        assert saved_mode(path) == 0o600
    assert [item.name for item in tmp_path.iterdir()] == ["token.txt"]  # no temporary file left behind


# --- two registrations at once, end to end ------------------------------------------------------


@POSIX_ONLY
async def test_two_registrations_at_once_lose_no_account(tmp_path: Path) -> None:
    for number in range(ROUNDS):
        folder = tmp_path / f"round-{number}"
        folder.mkdir()
        async with FakeMinechatServer() as server:
            server.registration_barrier = 2  # both account replies go out together, as two registrations at once
            processes = [
                await spawn_client(server, folder, "--nickname", name, stdin=subprocess.DEVNULL)
                for name in ("Eve", "Bob")
            ]
            ends = await asyncio.wait_for(asyncio.gather(*(process.communicate() for process in processes)), WAIT * 4)
            assert len(server.accounts) == 2
        codes = sorted(process.returncode for process in processes)
        assert codes == [EXIT_OK, EXIT_FILE], ends
        saved = (folder / "token.txt").read_text().strip()
        [lost] = [token for token in server.accounts if token != saved]
        [loser_err] = [
            err.decode() for process, (_, err) in zip(processes, ends, strict=True) if process.returncode == EXIT_FILE
        ]
        [winner_err] = [
            err.decode() for process, (_, err) in zip(processes, ends, strict=True) if process.returncode == EXIT_OK
        ]
        assert loser_err.count(lost) == 1, loser_err  # printed once, so the account is not lost
        assert saved not in loser_err
        assert f"{folder.resolve() / 'token.txt'} holds another account's token" in loser_err
        assert "--token_path" in loser_err and "TOKEN in .env" in loser_err
        assert lost not in winner_err and saved not in winner_err
        assert "the token is saved in" in winner_err


# --- an account reply cut before its newline ----------------------------------------------------


def cut_reply(nickname: str, token: str) -> bytes:
    """The account reply whole, but without its newline."""
    return json.dumps({"nickname": nickname, "account_hash": token}).encode()


async def test_account_reply_cut_before_its_newline_then_silence_is_saved(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.account_reply = cut_reply
    server.stall_at = "welcome"  # the newline never comes, nor anything else
    settings = settings_for(server, tmp_path, "--nickname", "Eve", "--reply-timeout", "0.3")
    with pytest.raises(ReplyTimeout) as caught:
        await asyncio.wait_for(send_client.send(settings, None, RecordingDelays()), WAIT)
    [(token, nickname)] = server.accounts.items()
    token_file = tmp_path / "token.txt"
    assert token_file.read_text() == token + "\n"
    if sys.platform != "win32":
        assert saved_mode(token_file) == 0o600
    assert f"the new account {nickname} is registered all the same and its token is saved in" in str(caught.value)
    assert token not in str(caught.value)


@POSIX_ONLY
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_account_reply_cut_before_its_newline_then_a_signal_is_saved(
    server: FakeMinechatServer, tmp_path: Path, signum: int, code: int
) -> None:
    server.account_reply = cut_reply
    server.stall_at = "welcome"
    process = await spawn_client(server, tmp_path, "--nickname", "Eve", "-v", stdin=subprocess.DEVNULL)
    try:
        err = await read_stderr_until(process, b"the token is saved in")
    finally:
        returncode = await stop_with_signal(process, signum)
    assert process.stderr is not None
    err += await process.stderr.read()
    assert returncode == code
    [(token, _)] = server.accounts.items()
    assert (tmp_path / "token.txt").read_text() == token + "\n"
    assert token.encode() not in err


def registering_dialogue() -> PostingDialogue:
    dialogue = PostingDialogue(Outbox(), None, "Eve")
    dialogue.receive_data(GREETING + NICKNAME_PROMPT)
    assert [type(dialogue.next_event()).__name__ for _ in range(2)] == ["Greeted", "Prompted"]
    return dialogue


def events_of(dialogue: PostingDialogue, feeds: list[bytes]) -> list[str]:
    names = []
    for data in feeds:
        dialogue.receive_data(data)
        while (event := dialogue.next_event()) is not None:
            names.append(type(event).__name__)
            if isinstance(event, Closed):
                break
    return names


ACCOUNT = json.dumps({"nickname": "Boring Eve", "account_hash": TOKEN}).encode()


@pytest.mark.parametrize(
    ("feeds", "events"),
    [
        pytest.param([ACCOUNT, b"\n" + WELCOME], ["Registered", "Welcomed"], id="newline-later"),
        pytest.param([ACCOUNT[:20], ACCOUNT[20:], b"\n", WELCOME], ["Registered", "Welcomed"], id="in-pieces"),
        pytest.param([ACCOUNT + b"\n" + WELCOME], ["Registered", "Welcomed"], id="whole"),
        pytest.param([ACCOUNT[:-1]], [], id="not-whole-yet"),
    ],
)
def test_account_reply_is_handed_out_once_whole_newline_or_not(feeds: list[bytes], events: list[str]) -> None:
    assert events_of(registering_dialogue(), feeds) == events


def test_account_reply_without_its_newline_then_the_end_is_kept_then_the_loss_reported() -> None:
    dialogue = registering_dialogue()
    assert events_of(dialogue, [ACCOUNT]) == ["Registered"]
    dialogue.receive_data(b"")
    with pytest.raises(ConnectionFailed, match="closed the connection while we waited for the welcome line"):
        dialogue.next_event()


def test_a_json_object_that_is_no_account_is_not_handed_out_early() -> None:
    dialogue = registering_dialogue()
    assert events_of(dialogue, [b'{"error": "busy"}']) == []
    dialogue.receive_data(b"\n")
    quoted = re.escape('expected account details from the server, got "{"error": "busy"}"')
    with pytest.raises(ProtocolError, match=quoted):
        dialogue.next_event()


# --- a malformed registration reply that holds an account hash ------------------------------------

MALFORMED: dict[str, Callable[[str, str], bytes]] = {
    "cut-json": lambda nickname, token: f'{{"nickname": "{nickname}", "account_hash": "{token}"\n'.encode(),
    "no-nickname": lambda nickname, token: f'{{"account_hash": "{token}"}}\n'.encode(),
    "python-repr": lambda nickname, token: f"{{'nickname': '{nickname}', 'account_hash': '{token}'}}\n".encode(),
    "with-prefix": lambda nickname, token: f'OK {{"nickname": "{nickname}", "account_hash": "{token}"}}\n'.encode(),
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_registration_reply_is_saved_never_quoted(
    server: FakeMinechatServer, tmp_path: Path, reply: Callable[[str, str], bytes]
) -> None:
    server.account_reply = reply
    code, out, err = await run_client(server, tmp_path, "--nickname", "Eve", "-v", stdin=None)
    [(token, _)] = server.accounts.items()
    assert code == EXIT_PROTOCOL, err
    assert token not in out + err
    assert (tmp_path / "token.txt").read_text() == token + "\n"
    [error] = [line for line in err.splitlines() if " ERROR " in line]
    assert "the registration reply is malformed" in error
    assert f"its token is saved in {tmp_path.resolve() / 'token.txt'}" in error
    assert "Traceback" not in err


async def test_malformed_registration_reply_that_cannot_be_saved_is_printed_once(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.account_reply = MALFORMED["python-repr"]
    # Another registration saves its token there meanwhile.
    server.on_registration = lambda: (tmp_path / "token.txt").write_text(OTHER_TOKEN + "\n")
    code, out, err = await run_client(server, tmp_path, "--nickname", "Eve", stdin=None)
    [token] = [token for token in server.accounts]
    assert code == EXIT_FILE, err
    assert err.count(token) == 1
    assert (tmp_path / "token.txt").read_text() == OTHER_TOKEN + "\n"
    assert OTHER_TOKEN not in out + err


async def test_malformed_login_reply_never_shows_a_token(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    server.login_reply_override = f'{{"nickname": 5, "account_hash": "{OTHER_TOKEN}"}}\n'.encode()
    code, out, err = await run_client(server, tmp_path, "--token", TOKEN, "--message", "hi", "-v")
    assert code == EXIT_PROTOCOL, err
    assert OTHER_TOKEN not in out + err and TOKEN not in out + err
    assert 'expected account details from the server, got "{"nickname": 5, "account_hash": "<token>"}"' in err


@pytest.mark.parametrize(
    ("reply", "account"),
    [
        (b'{"nickname": "Boring Eve", "account_hash": "abc-1"\n', Account("Boring Eve", "abc-1")),
        (b"{'account_hash': 'abc-1'}\n", Account("", "abc-1")),
        (b'{"nickname": "Boring Eve"}\n', None),
        (b'{"account_hash": ""}\n', None),
    ],
)
def test_salvaged_account_from_a_malformed_reply(reply: bytes, account: Account | None) -> None:
    assert salvage_account(reply) == account
    assert "abc-1" not in quote_reply(reply)
