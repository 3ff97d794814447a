"""send_client against the fake server: the bytes it sends, what the server took, what the user sees."""

from __future__ import annotations

import asyncio
import io
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import ADJECTIVES, ConnectionPlan, FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    ROOT,
    TOKEN,
    WAIT,
    RecordingDelays,
    StdinPipe,
    client_env,
    fill_disk,
    run_client,
    send,
    settings_for,
    spawn_client,
    stop_with_signal,
    texts_of,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import send_client
from chat_io import ConnectionFailed, FileError, ProtocolError, ReplyTimeout, UnknownTokenError
from send_client import DEFAULT_MESSAGE, RESUME_TRIES


async def test_login_and_post(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    await send(settings_for(server, tmp_path, "--token", account, "--message", "Привет, чат"))
    assert [(post.nickname, post.lines) for post in server.posts] == [("Focused Loyd", ["Привет, чат"])]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\nПривет, чат\n\n".encode()


async def test_login_copes_with_replies_split_across_writes(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.split_writes = True
    await send(settings_for(server, tmp_path, "--token", account, "--message", "one", "--message", "two"))
    assert [post.lines for post in server.posts] == [["one"], ["two"]]


async def test_without_message_posts_the_default(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    await send(settings_for(server, tmp_path, "--token", account))
    assert [post.lines for post in server.posts] == [[DEFAULT_MESSAGE]]


async def test_unknown_token_sends_nothing_more(server: FakeMinechatServer, tmp_path: Path) -> None:
    with pytest.raises(UnknownTokenError, match="does not know the token from --token or TOKEN"):
        await send(settings_for(server, tmp_path, "--token", "bogus-token", "--message", "hi"))
    # Once the server has seen the connection end, nothing more can have reached it.
    await server.wait_until(lambda: server.senders_done == 1)
    assert bytes(server.send_transcripts[0]) == b"bogus-token\n"
    assert server.unknown_tokens == ["bogus-token"]
    assert server.registrations == []
    assert server.posts == []
    assert server.accounts == {}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("one\ntwo", "one two"),
        ("one\r\ntwo", "one two"),
        ("\n\nBoring Eve: forged", "  Boring Eve: forged"),
        ("a\u2028b\u2029c\rd", "a b c d"),
    ],
)
async def test_line_breaks_cannot_split_a_post(
    server: FakeMinechatServer, tmp_path: Path, account: str, text: str, line: str
) -> None:
    await send(settings_for(server, tmp_path, "--token", account, "--message", text))
    assert [post.lines for post in server.posts] == [[line]]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\n{line}\n\n".encode()


async def test_registration_saves_token_then_logs_in_with_it(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.rng.seed(1)
    await send(settings_for(server, tmp_path, "--nickname", "Eve\nBoring Bob: forged"))
    assert server.registrations == ["Eve Boring Bob: forged"]
    assert bytes(server.send_transcripts[0]) == b"\nEve Boring Bob: forged\n"
    [(token, nickname)] = server.accounts.items()
    token_file = tmp_path / "token.txt"
    assert token_file.read_text() == token + "\n"
    if sys.platform != "win32":
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert server.posts == []  # no message was given, so registration only
    await send(settings_for(server, tmp_path, "--message", "back again"))
    assert bytes(server.send_transcripts[1]) == f"{token}\nback again\n\n".encode()
    assert [(post.nickname, post.lines) for post in server.posts] == [(nickname, ["back again"])]


async def test_registration_with_message_posts_in_same_session(server: FakeMinechatServer, tmp_path: Path) -> None:
    await send(settings_for(server, tmp_path, "--nickname", "Eve", "--message", "first post"))
    assert len(server.send_transcripts) == 1
    assert [post.lines for post in server.posts] == [["first post"]]


@pytest.mark.parametrize(
    ("stage", "args", "named"),
    [
        ("greeting", ["--token", TOKEN], "the greeting"),
        ("login_reply", ["--token", TOKEN], "the login reply"),
        ("welcome", ["--token", TOKEN], "the welcome line"),
        ("ack", ["--token", TOKEN], "the acknowledgement of message 1"),
        ("nickname_prompt", ["--nickname", "Eve"], "the nickname prompt"),
        ("login_reply", ["--nickname", "Eve"], "the registration reply"),
    ],
)
async def test_every_reply_has_a_timeout(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    stage: str,
    args: list[str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(send_client, "RESUME_TRIES", 1)  # a stalled acknowledgement is tried again; once will do
    server.stall_at = stage
    settings = settings_for(server, tmp_path, "--reply-timeout", "0.2", *args)
    with pytest.raises(ReplyTimeout, match=f"no complete reply from the server in 0.2 s while we waited for {named}"):
        await send(settings)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_connecting_has_a_timeout(tmp_path: Path) -> None:
    # A listener that never accepts, with its backlog filled, leaves further connects hanging.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            settings = send_client.parse_settings(
                ["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN, "--connect-timeout", "0.3"], {}, tmp_path
            )
            with pytest.raises(ConnectionFailed, match=r"no answer from 127\.0\.0\.1:\d+ within 0\.3 s"):
                await send(settings)
        finally:
            for filler in fillers:
                filler.close()


async def test_garbage_instead_of_json_is_a_protocol_error(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.login_reply_override = b"<html>\x1b[31mgarbage\n"
    with pytest.raises(ProtocolError, match=r'expected account details from the server, got "<html>\\x1b\[31mgarbage"'):
        await send(settings_for(server, tmp_path, "--token", account))
    assert server.posts == []


async def test_unexpected_welcome_is_a_protocol_error(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.split_writes = False
    settings = settings_for(server, tmp_path, "--token", account)
    server.login_reply_override = b'{"nickname": "Focused Loyd", "account_hash": "x"}\nWelcome!\n'
    with pytest.raises(ProtocolError, match='expected the welcome line from the server, got "Welcome!"'):
        await send(settings)


@pytest.mark.parametrize(
    ("stage", "named"), [("greeting", "the greeting"), ("welcome", "the welcome line"), ("ack", "the acknowledgement")]
)
async def test_server_closing_mid_dialogue(
    server: FakeMinechatServer, tmp_path: Path, account: str, stage: str, named: str
) -> None:
    server.close_at = stage
    with pytest.raises(ConnectionFailed, match=f"closed the connection while we waited for {named}"):
        await send(settings_for(server, tmp_path, "--token", account))


async def test_refused_connection_is_a_connection_failure(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = send_client.parse_settings(["--host", "127.0.0.1", "--port", str(port), "--token", TOKEN], {}, tmp_path)
    with pytest.raises(ConnectionFailed, match=f"cannot connect to 127.0.0.1:{port}: Connection refused"):
        await send(settings)


# --- settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "environ", "dotenv", "token_file", "token", "source"),
    [
        (["--token", "cli"], {"TOKEN": "env"}, "TOKEN=dotenv\n", "file", "cli", "--token or TOKEN"),
        ([], {"TOKEN": "env"}, "TOKEN=dotenv\n", "file", "env", "--token or TOKEN"),
        ([], {}, "TOKEN=dotenv\n", "file", "dotenv", "--token or TOKEN"),
        ([], {}, None, "file\n", "file", "the token file"),
        ([], {"TOKEN": ""}, None, "file\n", "file", "the token file"),
        (["--nickname", "Eve"], {}, None, None, None, ""),
    ],
)
def test_token_lookup_order(
    tmp_path: Path,
    argv: list[str],
    environ: dict[str, str],
    dotenv: str | None,
    token_file: str | None,
    token: str | None,
    source: str,
) -> None:
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    if token_file is not None:
        (tmp_path / "token.txt").write_text(token_file)
    settings = send_client.parse_settings([*argv, "--token_path", str(tmp_path / "token.txt")], environ, tmp_path)
    assert settings.token == token
    assert settings.token_source.startswith(source)


def test_settings_defaults_and_spellings(tmp_path: Path) -> None:
    settings = send_client.parse_settings(["--token-path", "t.txt", "--token", "x"], {}, tmp_path)
    assert (settings.host, settings.port, settings.token_path, settings.messages) == (
        "minechat.dvmn.org",
        5050,
        tmp_path / "t.txt",
        (),
    )
    settings = send_client.parse_settings(
        ["--message", "a", "--message", "-", "--token", "x"], {"SEND_PORT": "6000"}, tmp_path
    )
    assert (settings.port, settings.messages) == (6000, ("a", "-"))


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--token", "x", "--message", ""], "an empty message cannot be posted"),
        (["--token", "x", "--message", "\n \r\n"], "an empty message cannot be posted"),
        ([], "no token found"),
        (["--nickname", " \n"], "an empty nickname cannot be registered"),
        (["--token", "x", "--message", "\u200b\u200e"], "an empty message cannot be posted"),
        (["--nickname", "\u200b"], "an empty nickname cannot be registered"),
        (["--token", "two words"], "contains spaces or control characters"),
        (["--token", "tok\x1b[2Jen"], "contains spaces or control characters"),
        (["--token", "x", "--port", "70000"], "argument --port"),
        (["--token", "x", "--reply-timeout", "0"], "argument --reply-timeout"),
        (["--token", "x", "--mess", "hi"], "unrecognized arguments: --mess hi"),
        (["--tok", "x"], "unrecognized arguments: --tok x"),
        (["--token", "x", "--host", "minechat..dvmn.org"], "argument --host: 'minechat..dvmn.org' is not a host name"),
        (["--token", "x", "--host", "." + "a" * 64], "is not a host name"),
        (["--token", "x", "--message", "caf\udce9"], "argument --message: not valid UTF-8 text"),
    ],
)
def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str) -> None:
    with pytest.raises(SystemExit) as stop:
        send_client.parse_settings([*argv, "--token_path", str(tmp_path / "none.txt")], {}, tmp_path)
    assert stop.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize("message", ["[urgent] disk full on [db1]", "[a, b]", "[]", '["a", "b"]', "a, b", "-"])
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_message_variable_is_one_message_verbatim(tmp_path: Path, message: str, where: str) -> None:
    environ = {"TOKEN": "x"}
    if where == "environment":
        environ["MESSAGE"] = message
    else:
        (tmp_path / ".env").write_text(f"MESSAGE='{message}'\n")
    assert send_client.parse_settings([], environ, tmp_path).messages == (message,)


def test_command_line_messages_replace_the_variable(tmp_path: Path) -> None:
    settings = send_client.parse_settings(
        ["--message", "a", "--message", "b"], {"MESSAGE": "c", "TOKEN": "x"}, tmp_path
    )
    assert settings.messages == ("a", "b")


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    # As a user leaves them after uncommenting the lines of .env.example.
    (tmp_path / ".env").write_text("TOKEN=x\nNICKNAME=\nMESSAGE=\nHOST=\nSEND_PORT=\nTOKEN_PATH=\nREPLY_TIMEOUT=\n")
    settings = send_client.parse_settings([], {"MESSAGE": "", "NICKNAME": ""}, tmp_path)
    assert (settings.token, settings.nickname, settings.messages) == ("x", None, ())
    assert (settings.host, settings.port, settings.token_path) == ("minechat.dvmn.org", 5050, tmp_path / "token.txt")
    (tmp_path / ".env").write_text("NICKNAME=\n")
    with pytest.raises(SystemExit):
        send_client.parse_settings([], {}, tmp_path)


@pytest.mark.parametrize(
    ("environ", "dotenv", "complaint"),
    [
        ({}, "SEND_PORT=70000\n", "SEND_PORT=70000 (from {dotenv}): 70000 is outside 1..65535"),
        (
            {"REPLY_TIMEOUT": "soon"},
            None,
            "REPLY_TIMEOUT=soon (from the environment): 'soon' is not a number of seconds",
        ),
        ({"MESSAGE": "caf\udce9"}, None, "MESSAGE (from the environment): not valid UTF-8 text"),
        ({"TOKEN": "se\udcffcret"}, None, "TOKEN (from the environment): not valid UTF-8 text"),
        ({"NICKNAME": "Eve\udcff"}, None, "NICKNAME (from the environment): not valid UTF-8 text"),
    ],
)
def test_usage_errors_name_the_variable_and_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], dotenv: str | None, complaint: str
) -> None:
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    with pytest.raises(SystemExit) as stop:
        send_client.parse_settings(["--token_path", str(tmp_path / "none.txt")], {"TOKEN": "x", **environ}, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint.format(dotenv=tmp_path / ".env") in err
    assert "cret" not in err  # free text such as the token is never shown
    assert len(err.splitlines()) == 1


async def test_ipv6_address_in_brackets_is_used_and_shown_in_brackets(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = send_client.parse_settings(["--host", "[::1]", "--port", str(port), "--token", TOKEN], {}, tmp_path)
    assert settings.host == "::1"
    with pytest.raises(ConnectionFailed, match=re.escape(f"cannot connect to [::1]:{port}: ")):
        await send(settings)


def test_nickname_is_asked_on_a_terminal(tmp_path: Path) -> None:
    settings = send_client.parse_settings(
        ["--token_path", str(tmp_path / "t")], {}, tmp_path, ask_nickname=lambda: "Eve"
    )
    assert settings.nickname == "Eve"


def test_nickname_prompt_asks_again_until_a_nickname_is_given() -> None:
    answers = io.TextIOWrapper(io.BytesIO(b"\n   \n\xe2\x80\x8b\n\xffEve\nEve\n"), encoding="utf-8")
    out = io.StringIO()
    assert send_client.ask_nickname(answers, out) == "Eve\n"
    question = send_client.NICKNAME_QUESTION
    assert out.getvalue() == question * 4 + "That is not utf-8 text; type the nickname again.\n" + question


def test_nickname_prompt_at_end_of_input_gives_none() -> None:
    out = io.StringIO()
    assert send_client.ask_nickname(io.TextIOWrapper(io.BytesIO(b"")), out) is None
    assert out.getvalue() == send_client.NICKNAME_QUESTION + "\n"


@POSIX_ONLY
async def test_cli_ctrl_c_at_the_nickname_prompt_ends_its_line(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    controller, terminal = pty.openpty()  # stdin must be a terminal for the question to be asked
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1", "--port", "1",
            cwd=tmp_path, env=client_env(),
            stdin=terminal, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        question = send_client.NICKNAME_QUESTION.encode()
        asked = await asyncio.wait_for(process.stderr.readexactly(len(question)), WAIT * 3)
        assert asked == question
        returncode = await stop_with_signal(process, signal.SIGINT)
        rest = await process.stderr.read()
    finally:
        os.close(controller)
        os.close(terminal)
    assert returncode == 130
    assert rest == b"\n"  # the question's line is ended; nothing else is said


def test_help_lists_every_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        send_client.parse_settings(["--help"], {}, tmp_path)
    text = " ".join(capsys.readouterr().out.split())
    for name in ("HOST", "SEND_PORT", "TOKEN", "NICKNAME", "TOKEN_PATH", "MESSAGE", "REPLY_TIMEOUT", "VERBOSE", "5050"):
        assert name in text


# --- the real command, in a subprocess ---------------------------------------------


async def test_cli_unknown_token_exit_code_and_message(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_client(server, tmp_path, "--token", "bogus", "--message", "hi")
    await server.wait_until(lambda: server.senders_done == 1)
    assert bytes(server.send_transcripts[0]) == b"bogus\n"
    assert code == 5
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "the server does not know the token from --token or TOKEN" in err
    assert "Traceback" not in err
    assert server.registrations == [] and server.posts == []


async def test_cli_registration_reports_nickname_never_token(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_client(server, tmp_path, "--nickname", "Eve", "-v")
    assert code == 0
    [(token, nickname)] = server.accounts.items()
    assert nickname.split(" ", 1)[0] in ADJECTIVES and nickname.endswith(" Eve")
    # Files are named with their full path.
    assert f"registered as {nickname}; the token is saved in {tmp_path.resolve() / 'token.txt'}" in err
    assert token not in out + err
    assert (tmp_path / "token.txt").read_text() == token + "\n"


async def test_cli_verbose_dialogue_hides_the_token(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    (tmp_path / ".env").write_text(f"TOKEN={account}\n")
    code, out, err = await run_client(server, tmp_path, "-v", "--message", "hello")
    assert code == 0
    assert account not in out + err
    assert ">> '<token>\\n'" in err
    assert '<< \'{"nickname": "Focused Loyd", "account_hash": "<token>"}\\n\'' in err
    assert ">> 'hello\\n\\n'" in err
    assert "logged in as Focused Loyd" in err


async def test_cli_posts_thousand_stdin_lines_in_order(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    lines = [f"line {number} — строка" for number in range(1000)]
    stdin = ("\n".join(lines[:500]) + "\n\n" + "\r\n".join(lines[500:]) + "\n").encode()
    code, _, err = await run_client(server, tmp_path, "--token", account, "--message", "-", stdin=stdin)
    assert code == 0, err
    assert [post.lines for post in server.posts] == [[line] for line in lines]
    assert "posted 1000 messages as Focused Loyd" in err
    assert "Ctrl-D" not in err  # the hint is for a terminal only


async def test_cli_usage_error_exit_code(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, _, err = await run_client(server, tmp_path, "--message", "hi")
    assert code == 2
    assert "no token found" in err
    assert server.send_transcripts == []


@POSIX_ONLY
@pytest.mark.parametrize(
    ("argv", "variables", "complaint"),
    [
        ([b"--host", b"h\xff", b"--token", TOKEN.encode()], {}, "argument --host: not valid UTF-8 text"),
        ([b"--nickname", b"Eve\xff"], {}, "argument --nickname: not valid UTF-8 text"),
        ([b"--token", TOKEN.encode(), b"--message", b"caf\xe9"], {}, "argument --message: not valid UTF-8 text"),
        ([b"--token", TOKEN.encode()], {b"MESSAGE": b"caf\xe9"}, "MESSAGE (from the environment): not valid UTF-8"),
    ],
)
async def test_cli_invalid_utf8_is_a_usage_error(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    argv: list[bytes],
    variables: dict[bytes, bytes],
    complaint: str,
) -> None:
    # Bytes, as a shell passes them: Python decodes \xff to a lone surrogate that UTF-8 cannot encode.
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1", "--port", str(server.write_port), *argv,
        cwd=tmp_path, env={**client_env(), **variables},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 20)
    text = err.decode(errors="replace")
    assert process.returncode == 2, text
    assert complaint in text
    assert len(text.splitlines()) == 1
    assert "Traceback" not in text
    assert server.send_transcripts == []


@POSIX_ONLY
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_cli_signal_while_relaying_stdin(
    server: FakeMinechatServer, tmp_path: Path, account: str, signum: int, code: int
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1", "--port", str(server.write_port),
        "--token", account, "--message", "-",
        cwd=tmp_path, env=client_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdin is not None
        process.stdin.write(b"first\n")
        await process.stdin.drain()
        await server.wait_until(lambda: len(server.posts) == 1, timeout=WAIT * 3)
    finally:
        returncode = await stop_with_signal(process, signum)
    assert process.stderr is not None
    err = (await process.stderr.read()).decode()
    assert returncode == code
    assert "Traceback" not in err
    assert [post.lines for post in server.posts] == [["first"]]
    assert "interrupted: posted 1 message as Focused Loyd" in err


# --- resumable posting -------------------------------------------------------------


async def test_fixed_messages_resume_after_drops(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    # Acknowledge "one", take "two" without acknowledging it; then a connection that takes nothing.
    server.plans.extend([ConnectionPlan(posts=1, take_unacked=True), ConnectionPlan(posts=0)])
    messages = ["--message", "one", "--message", "two", "--message", "three"]
    sender = await send(settings_for(server, tmp_path, "--token", account, *messages))
    assert texts_of(server) == ["one", "two", "two", "three"]
    assert texts_of(server, acknowledged_only=True) == ["one", "two", "three"]
    assert len(server.send_transcripts) == 3
    assert bytes(server.send_transcripts[2]) == f"{TOKEN}\ntwo\n\nthree\n\n".encode()
    assert (sender.outbox.acknowledged, sender.outbox.resent) == (3, 4)


async def test_fixed_messages_give_up_after_fruitless_tries(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.plans.extend(ConnectionPlan(posts=0, take_unacked=True) for _ in range(RESUME_TRIES + 3))
    with pytest.raises(ConnectionFailed, match=f"acknowledgement of message 1; gave up after {RESUME_TRIES} tries"):
        await send(settings_for(server, tmp_path, "--token", account, "--message", "one"))
    assert len(server.send_transcripts) == RESUME_TRIES + 1
    assert texts_of(server) == ["one"] * (RESUME_TRIES + 1)


async def test_fixed_messages_fail_fast_without_any_connection(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.plans.append(ConnectionPlan(refuse=True))
    with pytest.raises(ConnectionFailed, match="closed the connection while we waited for the greeting"):
        await send(settings_for(server, tmp_path, "--token", account, "--message", "one"))
    assert len(server.send_transcripts) == 1


async def test_stream_waits_out_a_refusing_server(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.extend(ConnectionPlan(refuse=True) for _ in range(8))
    await send(settings_for(server, tmp_path, "--token", account, "--message", "-"), b"one\ntwo\n")
    assert texts_of(server) == ["one", "two"]
    assert server.refused == 8


async def test_stream_reconnects_after_an_idle_drop(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    server.idle_timeout = 0.2
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.send(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(b"before\n")
        await server.wait_until(lambda: server.idle_drops == 1)
        await stdin_pipe.write(b"after\n")
        stdin_pipe.end()
        await asyncio.wait_for(task, WAIT)
    finally:
        task.cancel()
    assert texts_of(server) == ["before", "after"]
    assert len(server.send_transcripts) == 2


async def test_stream_of_3000_lines_survives_a_failing_server(
    server: FakeMinechatServer, tmp_path: Path, account: str, stdin_pipe: StdinPipe
) -> None:
    rng = random.Random(7)
    for number in range(20):  # at most 2,800 posts acknowledged under plans: all of them come into play
        if number == 6:
            server.plans.extend(ConnectionPlan(refuse=True) for _ in range(6))  # out of service for a while
        server.plans.append(ConnectionPlan(posts=rng.randint(0, 140), take_unacked=rng.random() < 0.5))
    server.idle_timeout = 0.3
    lines = [f"line {number} — строка {rng.random()}" for number in range(3000)]
    data = "".join(f"{line}\n" for line in lines).encode()
    half = data.index(f"{lines[1500]}\n".encode())
    settings = settings_for(server, tmp_path, "--token", account, "--message", "-")
    task = asyncio.ensure_future(send_client.run(settings, stdin_pipe.reader, RecordingDelays()))
    try:
        await stdin_pipe.write(data[:half])
        # Once the first half is acknowledged the client idles, and the server drops it.
        await server.wait_until(lambda: len(texts_of(server, acknowledged_only=True)) == 1500, timeout=WAIT * 3)
        await server.wait_until(lambda: server.senders_done == len(server.send_transcripts))
        await stdin_pipe.write(data[half:])
        stdin_pipe.end()
        assert await asyncio.wait_for(task, WAIT * 3) == 0
    finally:
        task.cancel()
    assert texts_of(server, acknowledged_only=True) == lines  # every line, in order, acknowledged once
    for index, post in enumerate(server.posts):
        if not post.acknowledged:  # taken but not acknowledged: the only kind of post sent twice
            assert server.posts[index + 1].lines == post.lines
    assert server.refused == 6 and server.idle_drops >= 1 and not server.plans


@POSIX_ONLY
async def test_cli_stream_survives_a_reset(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.plans.append(ConnectionPlan(posts=3, reset=True))
    lines = [f"line {number}" for number in range(5000)]
    stdin = "".join(f"{line}\n" for line in lines).encode()
    code, _, err = await run_client(server, tmp_path, "--token", account, "--message", "-", stdin=stdin)
    assert code == 0, err
    assert "Traceback" not in err and "never retrieved" not in err
    assert list(dict.fromkeys(texts_of(server))) == lines
    assert "trying again in" in err
    assert "posted 5000 messages as Focused Loyd" in err


# --- registration never loses the account --------------------------------------------


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
        await send(settings_for(server, tmp_path, "--nickname", "Eve", "--reply-timeout", "0.2", "--message", "hi"))
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
    process = await spawn_client(server, tmp_path, "--nickname", "Eve", "-v", stdin=subprocess.DEVNULL)
    try:
        assert process.stderr is not None
        line = b"x"
        while line and b"account_hash" not in line:  # the client has read the account reply
            line = await asyncio.wait_for(process.stderr.readline(), WAIT * 3)
    finally:
        code = await stop_with_signal(process, signal.SIGINT)
    assert code == 130
    [(token, _)] = server.accounts.items()
    assert (tmp_path / "token.txt").read_text() == token + "\n"


async def test_full_disk_is_found_before_registering(
    server: FakeMinechatServer, tmp_path: Path, tiny_disk: Path
) -> None:
    fill_disk(tiny_disk)
    settings = settings_for(server, tmp_path, "--token_path", str(tiny_disk / "token.txt"), "--nickname", "Eve")
    with pytest.raises(FileError, match="No space left on device; choose another --token_path"):
        await send(settings)
    assert server.send_transcripts == []


async def test_token_that_cannot_be_saved_is_shown_once(
    server: FakeMinechatServer, tmp_path: Path, tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.on_registration = lambda: fill_disk(tiny_disk)  # the disk fills up after the pre-check
    settings = settings_for(server, tmp_path, "--token_path", str(tiny_disk / "token.txt"), "--nickname", "Eve")
    with pytest.raises(FileError, match="No space left on device; the token of the new account is printed above"):
        await send(settings)
    [(token, nickname)] = server.accounts.items()
    err = capsys.readouterr().err
    assert err.count(token) == 1
    assert f"The new account {nickname} is registered" in err
    assert f"put it in {tiny_disk / 'token.txt'}" in err
    assert not (tiny_disk / "token.txt").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
async def test_registration_writes_through_a_symlinked_token_path(server: FakeMinechatServer, tmp_path: Path) -> None:
    target = tmp_path / "secrets" / "minechat.token"
    target.parent.mkdir()
    link = tmp_path / "token.txt"
    link.symlink_to(target)
    await send(settings_for(server, tmp_path, "--nickname", "Eve"))
    [(token, _)] = server.accounts.items()
    assert link.is_symlink()
    assert target.read_text() == token + "\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(path.name for path in target.parent.iterdir()) == ["minechat.token"]


# --- one stdin line, one post; timeouts; what the user sees ----------------------------


async def test_stdin_separators_stay_inside_one_post(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    stdin = "a\rb\x0cc\x85d\u2028e\x0bf\x1cg\r\nsecond\n".encode()
    await send(settings_for(server, tmp_path, "--token", account, "--message", "-"), stdin)
    assert texts_of(server) == ["a b c d e f g", "second"]
    assert bytes(server.send_transcripts[0]) == f"{TOKEN}\na b c d e f g\n\nsecond\n\n".encode()


async def test_long_stdin_line_is_one_post_as_on_the_command_line(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    long = " ".join(["слово"] * 20_000)  # 220 KB
    await send(settings_for(server, tmp_path, "--token", account, "--message", "-"), f"{long}\n".encode())
    await send(settings_for(server, tmp_path, "--token", account, "--message", long))
    assert [post.lines for post in server.posts] == [[long], [long]]
    assert server.send_transcripts[0] == server.send_transcripts[1]


async def test_last_stdin_line_without_newline_is_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    await send(settings_for(server, tmp_path, "--token", account, "--message", "-"), b"one\n\n \ntwo")
    assert texts_of(server) == ["one", "two"]


async def test_reply_timeout_bounds_the_whole_line(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    server.trickle_interval = 0.02  # the greeting alone takes 1.7 s, each byte well within the timeout
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReplyTimeout, match=r"in 0\.3 s while we waited for the greeting"):
        await asyncio.wait_for(send(settings_for(server, tmp_path, "--token", account, "--reply-timeout", "0.3")), WAIT)
    assert loop.time() - started < 1.5


async def test_reading_port_chat_hints_at_the_posting_port(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    settings = settings_for(server, tmp_path, "--token", account, "--port", str(server.read_port))
    task = asyncio.ensure_future(send(settings))
    await server.wait_until(lambda: bool(server.readers))
    await server.broadcast(b"Eva: hello\n")
    with pytest.raises(ProtocolError, match=r'got "Eva: hello"; is this the reading port\? Posts go to port 5050'):
        await asyncio.wait_for(task, WAIT)


async def test_reading_port_silence_hints_at_the_posting_port(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    argv = ["--token", account, "--port", str(server.read_port), "--reply-timeout", "0.2"]
    settings = settings_for(server, tmp_path, *argv)
    with pytest.raises(ReplyTimeout, match=r"the greeting; is this the reading port\? Posts go to port 5050"):
        await send(settings)


@pytest.mark.parametrize(
    ("argv", "environ", "token_file", "source"),
    [
        (["--nickname", "NewGuy"], {}, TOKEN, "the token file"),
        ([], {"NICKNAME": "NewGuy"}, TOKEN, "the token file"),
        (["--nickname", "NewGuy", "--token", TOKEN], {}, None, "--token or TOKEN"),
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
    code, _, err = await run_client(server, tmp_path, "--nickname", "NewGuy")
    assert code == 2
    assert f"a token was found in the token file {tmp_path / 'token.txt'}" in err
    assert server.send_transcripts == []


async def test_cli_server_nickname_is_escaped(server: FakeMinechatServer, tmp_path: Path) -> None:
    token = server.add_account("Evil\x1b[2J\u202eLoyd")
    code, _, err = await run_client(server, tmp_path, "--token", token, "--message", "hi")
    assert code == 0, err
    assert "logged in as Evil\\x1b[2J\\u202eLoyd" in err
    assert "posted 1 message as Evil\\x1b[2J\\u202eLoyd" in err
    assert "\x1b" not in err and "\u202e" not in err


@POSIX_ONLY
async def test_cli_ctrl_c_while_stdin_waits_for_a_stalled_server(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    server.withhold_acks = True
    process = await spawn_client(server, tmp_path, "--token", account, "--message", "-")
    assert process.stdin is not None and process.stderr is not None
    # Far more than the outbox and the read-ahead take; buffered here, never drained.
    process.stdin.write(b"".join(b"line %06d\n" % number for number in range(100_000)))
    try:
        # A full outbox: the client stops reading stdin, its reading thread waits with data in hand.
        await server.wait_until(lambda: len(server.posts) >= _minechat.dialogue.OUTBOX_POSTS, timeout=WAIT * 3)
    finally:
        code = await stop_with_signal(process, signal.SIGINT)
        process.stdin.close()
        with suppress(OSError):
            await process.stdin.wait_closed()  # retrieves the broken pipe (Python 3.10 would log it)
    err = (await process.stderr.read()).decode()
    assert code == 130
    # Only our own log lines: no "Exception in thread stdin", no traceback, no warning from the handover.
    assert all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line) for line in err.splitlines()), err
    assert (
        f"interrupted: posted 0 messages as Focused Loyd; {_minechat.dialogue.OUTBOX_POSTS} more not acknowledged"
        in err
    )


async def test_cancelled_run_says_what_was_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As asyncio.run does on Ctrl-C where signal handlers cannot be installed (Windows).
    server.withhold_acks = True
    settings = settings_for(server, tmp_path, "--token", account, "--message", "one", "--message", "two")
    task = asyncio.ensure_future(send_client.run(settings, None, RecordingDelays()))
    await server.wait_until(lambda: len(server.posts) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "interrupted: posted 0 messages as Focused Loyd; 2 more not acknowledged" in caplog.text


@POSIX_ONLY
async def test_cli_stdin_on_a_terminal_says_how_to_finish(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    import pty

    controller, terminal = pty.openpty()
    try:
        process = await spawn_client(server, tmp_path, "--token", account, "--message", "-", stdin=terminal)
        os.close(terminal)
        terminal = -1
        try:
            os.write(controller, b"typed by hand\n")
            await server.wait_until(lambda: len(server.posts) == 1, timeout=WAIT * 3)
            os.write(controller, b"\x04")  # Ctrl-D at the start of a line: end of input
            code = await asyncio.wait_for(process.wait(), WAIT * 3)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.stderr is not None
    err = (await process.stderr.read()).decode()
    assert code == 0, err
    assert "end with Ctrl-D" in err
    assert texts_of(server) == ["typed by hand"]


@POSIX_ONLY
@pytest.mark.parametrize(("message", "code"), [("hi", 0), ("-", 2)])
async def test_cli_closed_stdin_is_touched_only_for_dash(
    server: FakeMinechatServer, tmp_path: Path, account: str, message: str, code: int
) -> None:
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", 'exec "$0" "$@" <&-', sys.executable, str(ROOT / "send_client.py"),
        "--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", message,
        cwd=tmp_path, env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err_bytes = await asyncio.wait_for(process.communicate(), 20)
    err = err_bytes.decode()
    assert process.returncode == code, err
    assert "Traceback" not in err
    if code == 0:
        assert texts_of(server) == ["hi"]
    else:
        assert "stdin is closed" in err
        assert server.send_transcripts == []
