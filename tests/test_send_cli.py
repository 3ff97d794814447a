"""send_client's command line: settings, usage errors, --help, the nickname prompt, stdin, signals, main()."""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    LINUX_ONLY,
    POSIX_ONLY,
    RUN_WAIT,
    START_WAIT,
    TOKEN,
    WAIT,
    RecordingDelays,
    client_env,
    client_process,
    error_lines,
    run_send_main,
    run_sender_process,
    settings_for,
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
from chat_io import EXIT_FILE, EXIT_USAGE


class TerminalStdin:
    """A stdin that says it is a terminal."""

    encoding = "utf-8"

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return True


def usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        send_client.parse_settings([*argv, "--token_path", str(tmp_path / "token.txt")], {}, tmp_path)
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    return line.split(": error: ", 1)[1]


PIPE_CAPACITY = 64 * 1024  # Linux default; a pipe counts as full within a page of it


def test_empty_message_error_says_so() -> None:
    with pytest.raises(ValueError, match=r"^an empty message cannot be posted$"):
        _minechat.dialogue.encode_post(" ")


@pytest.mark.parametrize(
    ("argv", "environ", "dotenv", "token_file", "token", "source"),
    [
        (
            ["--token", "cli"],
            {"MINECHAT_TOKEN": "env"},
            "TOKEN=dotenv\n",
            "file",
            "cli",
            "--token, MINECHAT_TOKEN or TOKEN in .env",
        ),
        ([], {"MINECHAT_TOKEN": "env"}, "TOKEN=dotenv\n", "file", "env", "--token, MINECHAT_TOKEN or TOKEN in .env"),
        ([], {}, "TOKEN=dotenv\n", "file", "dotenv", "--token, MINECHAT_TOKEN or TOKEN in .env"),
        ([], {}, None, "file\n", "file", "the token file"),
        ([], {"MINECHAT_TOKEN": ""}, None, "file\n", "file", "the token file"),
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
        ["--message", "a", "--message", "-", "--token", "x"], {"MINECHAT_SEND_PORT": "6000"}, tmp_path
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
    environ = {"MINECHAT_TOKEN": "x"}
    if where == "environment":
        environ["MINECHAT_MESSAGE"] = message
    else:
        (tmp_path / ".env").write_text(f"MESSAGE='{message}'\n")
    assert send_client.parse_settings([], environ, tmp_path).messages == (message,)


def test_command_line_messages_replace_the_variable(tmp_path: Path) -> None:
    settings = send_client.parse_settings(
        ["--message", "a", "--message", "b"], {"MINECHAT_MESSAGE": "c", "MINECHAT_TOKEN": "x"}, tmp_path
    )
    assert settings.messages == ("a", "b")


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    # As a user leaves them after uncommenting the lines of .env.example.
    (tmp_path / ".env").write_text("TOKEN=x\nNICKNAME=\nMESSAGE=\nHOST=\nSEND_PORT=\nTOKEN_PATH=\nREPLY_TIMEOUT=\n")
    settings = send_client.parse_settings([], {"MINECHAT_MESSAGE": "", "MINECHAT_NICKNAME": ""}, tmp_path)
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
            {"MINECHAT_REPLY_TIMEOUT": "soon"},
            None,
            "MINECHAT_REPLY_TIMEOUT=soon (from the environment): 'soon' is not a number of seconds",
        ),
        ({"MINECHAT_MESSAGE": "caf\udce9"}, None, "MINECHAT_MESSAGE (from the environment): not valid UTF-8 text"),
        ({"MINECHAT_TOKEN": "se\udcffcret"}, None, "MINECHAT_TOKEN (from the environment): not valid UTF-8 text"),
        ({"MINECHAT_NICKNAME": "Eve\udcff"}, None, "MINECHAT_NICKNAME (from the environment): not valid UTF-8 text"),
    ],
)
def test_usage_errors_name_the_variable_and_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], dotenv: str | None, complaint: str
) -> None:
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    with pytest.raises(SystemExit) as stop:
        send_client.parse_settings(
            ["--token_path", str(tmp_path / "none.txt")], {"MINECHAT_TOKEN": "x", **environ}, tmp_path
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint.format(dotenv=tmp_path / ".env") in err
    assert "cret" not in err  # free text such as the token is never shown
    assert len(err.splitlines()) == 1


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
        async with client_process(
            "send_client.py", port=1, cwd=tmp_path, stdin=terminal, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as process:
            assert process.stderr is not None
            question = send_client.NICKNAME_QUESTION.encode()
            asked = await asyncio.wait_for(process.stderr.readexactly(len(question)), START_WAIT)
            assert asked == question
            returncode = await stop_with_signal(process, signal.SIGINT)
            rest = await process.stderr.read()
    finally:
        os.close(controller)
        os.close(terminal)
    assert returncode == -signal.SIGINT
    assert rest == b"\n"  # the question's line is ended; nothing else is said


def test_help_lists_every_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        send_client.parse_settings(["--help"], {}, tmp_path)
    text = " ".join(capsys.readouterr().out.split())
    for name in ("HOST", "SEND_PORT", "TOKEN", "NICKNAME", "TOKEN_PATH", "MESSAGE", "REPLY_TIMEOUT", "VERBOSE", "5050"):
        assert name in text


async def test_cli_unknown_token_exit_code_and_message(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, out, err = await run_sender_process(server.write_port, tmp_path, "--token", "bogus", "--message", "hi")
    await server.wait_until(lambda: server.senders_done == 1)
    assert bytes(server.send_transcripts[0]) == b"bogus\n"
    assert code == 5
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "the server does not know the token from --token, MINECHAT_TOKEN or TOKEN in .env" in err
    assert "Traceback" not in err
    assert server.registrations == [] and server.posts == []


async def test_cli_verbose_dialogue_hides_the_token(server: FakeMinechatServer, tmp_path: Path, account: str) -> None:
    (tmp_path / ".env").write_text(f"TOKEN={account}\n")
    code, out, err = await run_sender_process(server.write_port, tmp_path, "-v", "--message", "hello")
    assert code == 0
    assert account not in out + err
    assert ">> '<token>\\n'" in err
    assert '<< \'{"nickname": "Focused Loyd", "account_hash": "<token>"}\\n\'' in err
    assert ">> 'hello\\n\\n'" in err
    assert "logged in as Focused Loyd" in err


async def test_cli_usage_error_exit_code(server: FakeMinechatServer, tmp_path: Path) -> None:
    code, _, err = await run_sender_process(server.write_port, tmp_path, "--message", "hi")
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
        (
            [b"--token", TOKEN.encode()],
            {b"MINECHAT_MESSAGE": b"caf\xe9"},
            "MINECHAT_MESSAGE (from the environment): not valid UTF-8",
        ),
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
    async with client_process(
        "send_client.py", *argv, port=server.write_port, cwd=tmp_path, env={**client_env(), **variables},
        stdout=subprocess.DEVNULL,
    ) as process:  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), RUN_WAIT)
    text = err.decode(errors="replace")
    assert process.returncode == 2, text
    assert complaint in text
    assert len(text.splitlines()) == 1
    assert "Traceback" not in text
    assert server.send_transcripts == []


@POSIX_ONLY
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, -signal.SIGTERM)])
async def test_cli_signal_while_relaying_stdin(
    server: FakeMinechatServer, tmp_path: Path, account: str, signum: int, code: int
) -> None:
    async with client_process(
        "send_client.py",
        "--token",
        account,
        "--message",
        "-",
        port=server.write_port,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
    ) as process:
        assert process.stdin is not None
        process.stdin.write(b"first\n")
        await process.stdin.drain()
        await server.wait_until(lambda: len(server.posts) == 1, timeout=START_WAIT)
        returncode = await stop_with_signal(process, signum)
    assert process.stderr is not None
    err = (await process.stderr.read()).decode()
    assert returncode == code
    assert "Traceback" not in err
    assert [post.lines for post in server.posts] == [["first"]]
    assert "interrupted: posted 1 message as Focused Loyd" in err


@POSIX_ONLY
async def test_cli_stdin_on_a_terminal_says_how_to_finish(
    server: FakeMinechatServer, tmp_path: Path, account: str
) -> None:
    import pty

    controller, terminal = pty.openpty()
    try:
        async with client_process(
            "send_client.py", "--token", account, "--message", "-", stdin=terminal, port=server.write_port, cwd=tmp_path
        ) as process:
            os.close(terminal)
            terminal = -1
            os.write(controller, b"typed by hand\n")
            await server.wait_until(lambda: len(server.posts) == 1, timeout=START_WAIT)
            os.write(controller, b"\x04")  # Ctrl-D at the start of a line: end of input
            code = await asyncio.wait_for(process.wait(), START_WAIT)
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
    async with client_process(
        "send_client.py", "--token", account, "--message", message,
        port=server.write_port, cwd=tmp_path, shell='exec "$@" <&-',
    ) as process:  # fmt: skip
        _, err_bytes = await asyncio.wait_for(process.communicate(), RUN_WAIT)
    err = err_bytes.decode()
    assert process.returncode == code, err
    assert "Traceback" not in err
    if code == 0:
        assert texts_of(server) == ["hi"]
    else:
        assert "stdin is closed" in err
        assert server.send_transcripts == []


async def test_cli_unusable_token_path_is_exit_6_before_connecting(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token_path", "missing/token.txt"]
    assert await run_send_main([*argv, "--nickname", "Eve"], tmp_path, monkeypatch) == EXIT_FILE
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(
        f" ERROR cannot save a token in {tmp_path / 'missing'}: No such file or directory; choose another --token_path"
    )
    assert server.send_transcripts == []


async def test_cli_posts_and_reports(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--read-port", str(server.read_port)]
    argv += ["--token", account]
    assert await run_send_main([*argv, "--message", "one", "--message", "two"], tmp_path, monkeypatch) == 0
    assert texts_of(server, acknowledged_only=True) == ["one", "two"]
    lines = error_lines(capsys.readouterr().err)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO logged in as Focused Loyd",
        "INFO posted 2 messages as Focused Loyd",
    ]


async def test_cli_closed_stdin_with_dash_is_a_usage_error(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", TOKEN, "--message", "-"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == EXIT_USAGE
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(" ERROR --message - reads stdin, but stdin is closed")
    assert server.send_transcripts == []


async def test_cli_terminal_stdin_gets_the_hint_and_is_posted(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", TerminalStdin("один\n".encode()))
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "-"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert texts_of(server) == ["один"]
    assert capsys.readouterr().err.startswith(send_client.STDIN_HINT + "\n")


async def test_cli_asks_for_a_nickname_only_at_a_terminal(
    server: FakeMinechatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--message", "hi"]
    monkeypatch.setattr(sys, "stdin", TerminalStdin(b"Eve\n"))
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert server.registrations == ["Eve"]
    assert capsys.readouterr().err.startswith(send_client.NICKNAME_QUESTION)
    (tmp_path / "token.txt").unlink()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Bob\n")))  # not a terminal
    assert await run_send_main(argv, tmp_path, monkeypatch) == EXIT_USAGE
    assert server.registrations == ["Eve"]


def test_ask_nickname_uses_the_terminal_encoding_and_ends_the_line_on_ctrl_c() -> None:
    class Terminal:
        encoding = "cp1251"
        buffer = io.BytesIO("Ева\n".encode("cp1251"))

    out = io.StringIO()
    assert send_client.ask_nickname(Terminal(), out) == "Ева\n"  # type: ignore[arg-type]

    class Interrupted:
        class buffer:
            @staticmethod
            def readline() -> bytes:
                raise KeyboardInterrupt

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        send_client.ask_nickname(Interrupted(), out)  # type: ignore[arg-type]
    assert out.getvalue() == send_client.NICKNAME_QUESTION + "\n"


async def test_cli_verbose_logs_the_dialogue(
    server: FakeMinechatServer,
    tmp_path: Path,
    account: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "-v", "--message", "x"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    err = capsys.readouterr().err
    assert " DEBUG >> '<token>\\n'" in err and account not in err


@POSIX_ONLY
@pytest.mark.usefixtures("default_signal_handlers")
async def test_a_signal_stops_the_run_and_says_what_was_posted(
    server: FakeMinechatServer, tmp_path: Path, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.withhold_acks = True
    settings = settings_for(server, tmp_path, "--token", account, "--message", "one")
    task = asyncio.ensure_future(send_client.run(settings, None, RecordingDelays()))
    await server.wait_until(lambda: len(server.posts) == 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, WAIT) == 128 + signal.SIGTERM
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["interrupted: posted 0 messages as Focused Loyd; 1 more not acknowledged, so maybe not posted"]


def test_usage_errors_word_for_word(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(tmp_path, capsys, ["--token", "x", "--message", " "]) == (
        "argument --message: an empty message cannot be posted"
    )
    assert usage_error(tmp_path, capsys, ["--nickname", "\u200b"]) == (
        "argument --nickname: an empty nickname cannot be registered"
    )
    with_token = usage_error(tmp_path, capsys, ["--token", "x", "--nickname", "Eve"])
    # The process environment is read as MINECHAT_TOKEN only, so the messages name it that way.
    assert with_token.endswith(
        "a --token_path that holds no token yet and without --token, MINECHAT_TOKEN or TOKEN in .env"
    )
    assert "token was found in --token, MINECHAT_TOKEN or TOKEN in .env;" in with_token
    assert usage_error(tmp_path, capsys, ["--message", "hi"]) == (
        f"no token found (--token, MINECHAT_TOKEN, TOKEN in .env or {tmp_path / 'token.txt'}); "
        "give --nickname to register a new account"
    )
    assert usage_error(tmp_path, capsys, ["--check"]) == (
        f"--check needs a token (--token, MINECHAT_TOKEN, TOKEN in .env or {tmp_path / 'token.txt'}), "
        "and none was found"
    )
    (tmp_path / "token.txt").write_text("t\n")
    from_file = usage_error(tmp_path, capsys, ["--nickname", "Eve"])
    assert from_file.endswith("a --token_path that holds no token yet")


def test_help_and_spellings(tmp_path: Path) -> None:
    text = " ".join(send_client.build_parser().format_help().split())
    assert "Post to the minechat chat. With no token found, register a new account and save its token." in text
    settings = send_client.parse_settings(["--token", "t", "--reply_timeout", "4", "--token-path", "x"], {}, tmp_path)
    assert (settings.reply_timeout, settings.token_path) == (4.0, tmp_path / "x")


async def test_cli_reads_stdin_in_its_own_encoding(
    server: FakeMinechatServer, tmp_path: Path, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = TerminalStdin("Ж\n".encode("cp1251"))
    stdin.encoding = "cp1251"
    monkeypatch.setattr(sys, "stdin", stdin)
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "-"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert texts_of(server) == ["Ж"]


async def test_cli_closed_stdin_is_fine_without_dash(
    server: FakeMinechatServer, tmp_path: Path, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--token", account, "--message", "hi"]
    assert await run_send_main(argv, tmp_path, monkeypatch) == 0
    assert texts_of(server) == ["hi"]


@pytest.mark.slow
@LINUX_ONLY
async def test_ctrl_c_works_while_stderr_is_not_read(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Focused Loyd", TOKEN)
    read_end, write_end = os.pipe()
    # stdin an OS pipe too: asyncio's own would make Process.wait() wait for it to close.
    stdin_read, stdin_write = os.pipe()
    try:
        async with client_process(
            "send_client.py", "--token", TOKEN, "--message", "-", "-v",
            port=server.write_port, cwd=tmp_path, stdin=stdin_read, stdout=subprocess.DEVNULL, stderr=write_end,
        ) as process:  # fmt: skip
            os.close(write_end)
            os.close(stdin_read)
            os.write(stdin_write, b"".join(b"line %d\n" % number for number in range(3000)))
            buffered = bytearray(4)

            async def pipe_full() -> None:
                while True:
                    fcntl.ioctl(read_end, termios.FIONREAD, buffered)
                    # Half full is plenty: the pipe takes whole pages, so small writes may never fill it to the brim.
                    if struct.unpack("i", buffered)[0] >= PIPE_CAPACITY // 2:
                        return
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(pipe_full(), START_WAIT)
            code = await stop_with_signal(process, signal.SIGINT)
    finally:
        os.close(read_end)
        os.close(stdin_write)
    assert code == -signal.SIGINT  # stop_with_signal allows STOP_WAIT seconds
