"""Registering a new account: the token is saved before anything else can fail, and never shown."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import stat
import sys
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import ADJECTIVES, GREETING, NICKNAME_PROMPT, ConnectionPlan, FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    START_WAIT,
    SYMLINKS,
    TOKEN,
    RecordingDelays,
    client_process,
    fill_disk,
    run_sender,
    run_sender_process,
    scripted_server,
    send_to_end,
    settings_at,
    settings_for,
    stop_with_signal,
)

import send_client
from chat_io import ChatError, ConnectionFailed, FileError, ProtocolError, ReplyTimeout


async def test_registration_saves_token_then_logs_in_with_it(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.rng.seed(1)
    await run_sender(settings_for(server, tmp_path, "--nickname", "Eve\nBoring Bob: forged"))
    assert server.registrations == ["Eve Boring Bob: forged"]
    assert bytes(server.send_transcripts[0]) == b"\nEve Boring Bob: forged\n"
    [(token, nickname)] = server.accounts.items()
    token_file = tmp_path / "token.txt"
    assert token_file.read_text() == token + "\n"
    if sys.platform != "win32":
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert server.posts == []  # no message was given, so registration only
    await run_sender(settings_for(server, tmp_path, "--message", "back again"))
    assert bytes(server.send_transcripts[1]) == f"{token}\nback again\n\n".encode()
    assert [(post.nickname, post.lines) for post in server.posts] == [(nickname, ["back again"])]


async def test_registration_with_message_posts_in_same_session(server: FakeMinechatServer, tmp_path: Path) -> None:
    await run_sender(settings_for(server, tmp_path, "--nickname", "Eve", "--message", "first post"))
    assert len(server.send_transcripts) == 1
    assert [post.lines for post in server.posts] == [["first post"]]


async def test_cli_registration_reports_nickname_never_token(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_sender_process(server.write_port, tmp_path, "--nickname", "Eve", "-v")
    assert code == 0
    [(token, nickname)] = server.accounts.items()
    assert nickname.split(" ", 1)[0] in ADJECTIVES and nickname.endswith(" Eve")
    # Files are named with their full path.
    assert f"registered as {nickname}; the token is saved in {tmp_path.resolve() / 'token.txt'}" in err
    assert token not in out + err
    assert (tmp_path / "token.txt").read_text() == token + "\n"


@pytest.mark.parametrize(
    ("failure", "error"), [("close", ConnectionFailed), ("garbage", ProtocolError), ("quiet", ReplyTimeout)]
)
async def test_registration_keeps_the_token_whatever_follows(
    server: FakeMinechatServer, tmp_path: Path, failure: str, error: type[Exception]
) -> None:
    if failure == "close":
        server.close_at = "welcome"
    elif failure == "garbage":
        server.welcome_override = b"<html>\n"
    else:
        server.stall_at = "welcome"
    with pytest.raises(error) as caught:
        await run_sender(
            settings_for(server, tmp_path, "--nickname", "Eve", "--reply-timeout", "0.2", "--message", "hi")
        )
    [(token, nickname)] = server.accounts.items()
    token_file = tmp_path / "token.txt"
    assert token_file.read_text() == token + "\n"
    if sys.platform != "win32":
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert f"the new account {nickname} is registered all the same and its token is saved in" in str(caught.value)
    assert len(server.send_transcripts) == 1  # never registered twice


@POSIX_ONLY
async def test_cli_ctrl_c_after_the_account_reply_keeps_the_token(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.stall_at = "welcome"
    async with client_process(
        "send_client.py", "--nickname", "Eve", "-v", port=server.write_port, cwd=tmp_path
    ) as process:
        assert process.stderr is not None
        line = b"x"
        while line and b"account_hash" not in line:  # the client has read the account reply
            line = await asyncio.wait_for(process.stderr.readline(), START_WAIT)
        code = await stop_with_signal(process, signal.SIGINT)
    assert code == -signal.SIGINT
    [(token, _)] = server.accounts.items()
    assert (tmp_path / "token.txt").read_text() == token + "\n"


async def test_full_disk_is_found_before_registering(
    server: FakeMinechatServer, tmp_path: Path, tiny_disk: Path
) -> None:
    fill_disk(tiny_disk)
    settings = settings_for(server, tmp_path, "--token_path", str(tiny_disk / "token.txt"), "--nickname", "Eve")
    with pytest.raises(FileError, match="No space left on device; choose another --token_path"):
        await run_sender(settings)
    assert server.send_transcripts == []


async def test_token_that_cannot_be_saved_is_shown_once(
    server: FakeMinechatServer, tmp_path: Path, tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.on_registration = lambda: fill_disk(tiny_disk)  # the disk fills up after the pre-check
    settings = settings_for(server, tmp_path, "--token_path", str(tiny_disk / "token.txt"), "--nickname", "Eve")
    with pytest.raises(FileError, match="No space left on device; the token of the new account is printed above"):
        await run_sender(settings)
    [(token, nickname)] = server.accounts.items()
    err = capsys.readouterr().err
    assert err.count(token) == 1
    assert f"The new account {nickname} is registered" in err
    assert f"put it in {tiny_disk / 'token.txt'}" in err
    assert not (tiny_disk / "token.txt").exists()


@SYMLINKS
async def test_registration_writes_through_a_symlinked_token_path(server: FakeMinechatServer, tmp_path: Path) -> None:
    target = tmp_path / "secrets" / "minechat.token"
    target.parent.mkdir()
    link = tmp_path / "token.txt"
    link.symlink_to(target)
    await run_sender(settings_for(server, tmp_path, "--nickname", "Eve"))
    [(token, _)] = server.accounts.items()
    assert link.is_symlink()
    assert target.read_text() == token + "\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(path.name for path in target.parent.iterdir()) == ["minechat.token"]


@pytest.mark.parametrize(
    ("argv", "environ", "token_file", "source"),
    [
        (["--nickname", "NewGuy"], {}, TOKEN, "the token file"),
        ([], {"MINECHAT_NICKNAME": "NewGuy"}, TOKEN, "the token file"),
        (["--nickname", "NewGuy", "--token", TOKEN], {}, None, "--token, MINECHAT_TOKEN or TOKEN in .env"),
        (
            [],
            {"MINECHAT_NICKNAME": "NewGuy", "MINECHAT_TOKEN": TOKEN},
            None,
            "--token, MINECHAT_TOKEN or TOKEN in .env",
        ),
    ],
)
def test_nickname_with_a_found_token_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environ: dict[str, str],
    token_file: str | None,
    source: str,
) -> None:
    if token_file is not None:
        (tmp_path / "token.txt").write_text(token_file + "\n")
    with pytest.raises(SystemExit) as stop:
        send_client.parse_settings([*argv, "--token_path", str(tmp_path / "token.txt")], environ, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"registers a new account, but a token was found in {source}" in err
    assert "a --token_path that holds no token yet" in err


async def test_cli_nickname_with_a_token_posts_nothing(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    (tmp_path / "token.txt").write_text(account + "\n")
    code, _, err = await run_sender_process(server.write_port, tmp_path, "--nickname", "NewGuy")
    assert code == 2
    assert f"a token was found in the token file {tmp_path / 'token.txt'}" in err
    assert server.send_transcripts == []


async def test_cli_server_nickname_is_escaped(server: FakeMinechatServer, tmp_path: Path) -> None:
    token = server.add_account("Evil\x1b[2J\u202eLoyd")
    code, _, err = await run_sender_process(server.write_port, tmp_path, "--token", token, "--message", "hi")
    assert code == 0, err
    assert "logged in as Evil\\x1b[2J\\u202eLoyd" in err
    assert "posted 1 message as Evil\\x1b[2J\\u202eLoyd" in err
    assert "\x1b" not in err and "\u202e" not in err


async def test_an_account_hash_the_server_hands_out_is_hidden_too(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="send_client")
    server.login_reply_override = b'{"nickname": "Focused Loyd", "account_hash": "other-hash"}\n'
    await send_to_end(settings_for(server, tmp_path, "--token", account, "--message", "hi"), None)
    assert "other-hash" not in caplog.text
    assert '<< \'{"nickname": "Focused Loyd", "account_hash": "<token>"}\\n\'' in caplog.text


async def test_concurrent_registrations_on_one_token_path_lose_no_account(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both start while no token is saved, as two senders started at once do; then both register.
    first = settings_at(server.write_port, tmp_path, "--nickname", "Eve")
    second = settings_at(server.write_port, tmp_path, "--nickname", "Bob")
    for settings in (first, second):
        with suppress(ChatError):
            await send_to_end(settings, io.BytesIO(b""), RecordingDelays())
    assert len(server.accounts) == 2
    saved = (tmp_path / "token.txt").read_text().strip()
    shown = capsys.readouterr().err
    lost = [token for token in server.accounts if token != saved and token not in shown]
    assert not lost, f"registered, then neither saved nor shown: {lost}"


async def test_registration_reply_cut_before_its_newline_keeps_the_token(tmp_path: Path) -> None:
    new_token = "11111111-74ca-11e9-9d4f-0242ac110002"

    async def register_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await reader.readline()
        writer.write(NICKNAME_PROMPT)
        await reader.readline()
        writer.write(f'{{"nickname": "Boring Eve", "account_hash": "{new_token}"}}'.encode())
        await writer.drain()

    async with scripted_server(register_then_hang_up) as port:
        with suppress(ChatError):
            await send_to_end(settings_at(port, tmp_path, "--nickname", "Eve"), io.BytesIO(b""), RecordingDelays())
    token_file = tmp_path / "token.txt"
    assert token_file.exists() and token_file.read_text().strip() == new_token


@pytest.mark.parametrize("cut", [10, 35, 70], ids=["early in the token", "mid-token", "just before its end"])
async def test_a_registration_reply_cut_inside_the_token_then_silence_never_saves_half_a_token(
    tmp_path: Path, cut: int
) -> None:
    new_token = "11111111-74ca-11e9-9d4f-0242ac110002"
    reply = f'{{"nickname": "Boring Eve", "account_hash": "{new_token}"}}'.encode()
    cut_at = reply.index(new_token.encode()) + len(new_token) * cut // 100

    async def register_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        await reader.readline()
        writer.write(NICKNAME_PROMPT)
        await reader.readline()
        writer.write(reply[:cut_at])
        await writer.drain()
        await reader.read()  # then silence, until the client gives up

    async with scripted_server(register_then_hang_up) as port:
        settings = settings_at(port, tmp_path, "--nickname", "Eve", "--reply-timeout", "0.2")
        with pytest.raises(ConnectionFailed, match="registration reply"):
            await send_to_end(settings, io.BytesIO(b""), RecordingDelays())
    token_file = tmp_path / "token.txt"
    assert not token_file.exists()  # half a token saved as if whole would lock the account out for good


@pytest.mark.usefixtures("server")
async def test_the_witness_knows_a_new_accounts_nickname(server: FakeMinechatServer, tmp_path: Path) -> None:
    # Registered, then the first connection takes "two" and hangs up before acknowledging it: the chat
    # showed it under the new account's nickname, so it is not sent again.
    server.plans.append(ConnectionPlan(posts=1, take_unacked=True))
    settings = settings_for(server, tmp_path, "--nickname", "Eve", "--message", "one", "--message", "two", watch=True)
    sender = await run_sender(settings)
    assert [" | ".join(post.lines) for post in server.posts] == ["one", "two"]
    assert (sender.outbox.acknowledged, sender.outbox.seen_only) == (1, 1)
