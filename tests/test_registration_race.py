"""No account is ever lost: racing registrations, replies cut short, malformed replies holding a token."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import stat
import sys
import threading
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import POSIX_ONLY, START_WAIT, WAIT, RecordingDelays, client_process, settings_for, stop_with_signal

import send_client
from _minechat.token_file import save_token
from chat_io import FileError, ProtocolError, ReplyTimeout

ROUNDS = 80
FIRST = "11111111-74ca-11e9-9d4f-0242ac110002"
SECOND = "22222222-74ca-11e9-9d4f-0242ac110002"


def race_once(path: Path) -> list[BaseException | None]:
    """Save two tokens to one path from two threads at the same moment; return each one's outcome."""
    start = threading.Barrier(2)
    outcomes: list[BaseException | None] = [None, None]

    def save(index: int, token: str) -> None:
        start.wait()
        try:
            save_token(path, token)
        except FileError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=save, args=(index, token)) for index, token in enumerate((FIRST, SECOND))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return outcomes


@pytest.mark.parametrize("existing", [None, b"", b"\n"])
def test_two_saves_at_once_never_both_succeed(tmp_path: Path, existing: bytes | None) -> None:
    for round_number in range(ROUNDS):
        path = tmp_path / f"token{round_number}.txt"
        if existing is not None:
            path.write_bytes(existing)  # there, but holding no token: still taken by one save only
        outcomes = race_once(path)
        saved = path.read_text().strip()
        assert saved in (FIRST, SECOND)
        winner = (FIRST, SECOND).index(saved)
        assert outcomes[winner] is None, f"round {round_number}: the saved token's save failed"
        assert isinstance(outcomes[1 - winner], FileError), f"round {round_number}: both saves said the token is saved"
        assert FIRST not in str(outcomes[1 - winner]) and SECOND not in str(outcomes[1 - winner])
        if sys.platform != "win32":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(os.listdir(tmp_path)) == sorted(f"token{number}.txt" for number in range(round_number + 1))


def test_save_never_replaces_a_token(tmp_path: Path) -> None:
    path = tmp_path / "token.txt"
    path.write_text(FIRST + "\n")
    with pytest.raises(FileError, match="holds another token"):
        save_token(path, SECOND)
    assert path.read_text() == FIRST + "\n"


def test_save_without_hard_links_still_creates_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # as on file systems without hard links

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "token.txt"
    save_token(path, FIRST)
    assert path.read_text() == FIRST + "\n"
    with pytest.raises(FileError, match="holds another token"):
        save_token(path, SECOND)
    assert path.read_text() == FIRST + "\n"
    assert os.listdir(tmp_path) == ["token.txt"]


# --- an account reply cut before its newline, then silence -------------------------------------


def cut_reply(nickname: str, token: str) -> bytes:
    """The account reply without its newline: whole, but the line never ends."""
    return json.dumps({"nickname": nickname, "account_hash": token}).encode()


async def test_cut_account_reply_then_silence_is_saved(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.registration_reply = cut_reply
    server.stall_after_registration = True
    settings = settings_for(server, tmp_path, "--nickname", "Eve", "--reply-timeout", "0.2", watch=True)
    sender = send_client.make_sender(settings, io.BytesIO(), RecordingDelays())
    with pytest.raises(ReplyTimeout) as caught:
        await asyncio.wait_for(sender.run(), WAIT)
    [(token, nickname)] = server.accounts.items()
    assert (tmp_path / "token.txt").read_text() == token + "\n"
    assert token not in str(caught.value)
    assert f"the new account {nickname} is registered all the same and its token is saved in" in str(caught.value)


@POSIX_ONLY
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_cut_account_reply_then_a_signal_is_saved(
    server: FakeMinechatServer, tmp_path: Path, signum: int
) -> None:
    server.registration_reply = cut_reply
    server.stall_after_registration = True
    async with client_process(
        "send_client.py", "--read-port", str(server.read_port), "--nickname", "Eve", "-v",
        port=server.write_port, cwd=tmp_path,
    ) as process:  # fmt: skip
        await server.wait_until(lambda: len(server.accounts) == 1, timeout=START_WAIT)
        assert process.stderr is not None
        line = b"x"
        while line and b"of a line not ended yet" not in line:  # the client has read the cut reply
            line = await asyncio.wait_for(process.stderr.readline(), START_WAIT)
        code = await stop_with_signal(process, signum)
    assert code == -signum
    [(token, _)] = server.accounts.items()
    assert (tmp_path / "token.txt").read_text() == token + "\n"
    assert token.encode() not in await process.stderr.read()


# --- a malformed registration reply that holds an account hash ---------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        lambda nickname, token: json.dumps({"nickname": 7, "account_hash": token}).encode() + b"\n",
        lambda nickname, token: json.dumps({"account_hash": token}).encode() + b"\n",
        lambda nickname, token: (
            b"{'nickname': '" + nickname.encode() + b"', 'account_hash': '" + token.encode() + b"'}\n"
        ),
    ],
    ids=["nickname-not-text", "no-nickname", "python-repr"],
)
async def test_malformed_registration_reply_holding_a_token_is_saved(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, shape: object
) -> None:
    server.registration_reply = shape  # type: ignore[assignment]
    settings = settings_for(server, tmp_path, "--nickname", "Eve", "--reply-timeout", "0.5", watch=True)
    sender = send_client.make_sender(settings, io.BytesIO(), RecordingDelays())
    with pytest.raises(ProtocolError) as caught:
        await asyncio.wait_for(sender.run(), WAIT)
    [(token, _)] = server.accounts.items()
    assert (tmp_path / "token.txt").read_text() == token + "\n"
    assert token not in str(caught.value)
    assert "its token is saved in" in str(caught.value)
    assert all(token not in record.getMessage() for record in caplog.records)


async def test_malformed_reply_without_a_token_quotes_no_secret(server: FakeMinechatServer, tmp_path: Path) -> None:
    token = server.add_account("Focused Loyd")
    server.login_reply_override = json.dumps({"nick": "x", "account_hash": "0000-secret-0000"}).encode() + b"\n"
    settings = settings_for(server, tmp_path, "--token", token, "--message", "hi", watch=True)
    with pytest.raises(ProtocolError) as caught:
        await asyncio.wait_for(send_client.make_sender(settings, None, RecordingDelays()).run(), WAIT)
    assert "0000-secret-0000" not in str(caught.value)
    assert "expected account details from the server" in str(caught.value)


# --- the loser of a race prints its token once, with where to put it ------------------------------


async def test_the_registration_that_loses_prints_its_token_once(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token.txt"
    # Another registration saves its token while ours waits for the server's reply.
    server.on_registration = lambda: path.write_text(FIRST + "\n")
    settings = settings_for(server, tmp_path, "--nickname", "Eve", watch=True)
    with pytest.raises(FileError, match="printed above"):
        await asyncio.wait_for(send_client.make_sender(settings, None, RecordingDelays()).run(), WAIT)
    [(token, nickname)] = server.accounts.items()
    assert path.read_text() == FIRST + "\n"  # never replaced
    err = capsys.readouterr().err
    assert err.count(token) == 1
    assert f"The new account {nickname} is registered, but {path} holds the token of another account" in err
    assert "--token_path" in err and "TOKEN in .env" in err
