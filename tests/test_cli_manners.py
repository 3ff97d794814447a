"""Small promises of both command lines: stamps strftime knows, one-line posts, -q and -v, the two ports."""

import logging
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import TOKEN, finish, start_client

import read_client
import send_client


def watching(server: FakeMinechatServer) -> list[str]:
    """A sender's --read-port: the fake server's chat, never whatever listens on port 5000 here."""
    return ["--read-port", str(server.read_port)]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("%Q", "%Q is no strftime field; a literal % is written %%"),
        ("[%H:%M] %", "it ends with a lone %; a literal % is written %%"),
        ("%", "it ends with a lone %; a literal % is written %%"),
        ("%H %Q %M %!", "%Q, %! are no strftime fields; a literal % is written %%"),
    ],
)
def test_a_time_format_strftime_does_not_know_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, reason: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        read_client.parse_settings(["--time-format", value], {}, tmp_path)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].endswith(f"argument --time-format/--time_format: {reason}")


@pytest.mark.parametrize("value", ["%H:%M", "%%Q %H", "[%d.%m.%y %H:%M]", "%Y-%m-%dT%H:%M:%S%z", "%-d.%m", "%e %b %T"])
def test_time_formats_strftime_knows_are_taken(tmp_path: Path, value: str) -> None:
    assert read_client.parse_settings(["--time-format", value], {}, tmp_path).time_format == value


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["--message", "one\ntwo", "--message", "three\r\nfour"], "--message"),
        (["--nickname", "Eve\nAdams"], "--nickname"),
    ],
)
def test_a_line_break_in_a_nickname_or_message_is_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, argv: list[str], what: str
) -> None:
    if what == "--message":
        argv = [*argv, "--token", TOKEN]
    settings = send_client.parse_settings(argv, {}, tmp_path)
    if what == "--nickname":
        assert settings.nickname == "Eve Adams"
    warnings = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert [record.levelname for record in warnings] == ["WARNING"]
    assert f"a line break in {what} becomes a space: a post is one line" in warnings[0].getMessage()


async def test_a_message_with_a_line_break_is_posted_with_a_space_and_said(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    server.add_account("Eve", TOKEN)
    process = await start_client(
        "send_client.py",
        "--token",
        TOKEN,
        "--message",
        "one\ntwo",
        *watching(server),
        port=server.write_port,
        cwd=tmp_path,
    )
    code, err = await finish(process)
    assert code == 0, err
    assert [post.lines for post in server.posts] == [["one two"]]
    assert len([line for line in err.splitlines() if "a line break in --message" in line]) == 1


def test_plain_nicknames_and_messages_say_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    send_client.parse_settings(["--message", "one two", "--token", TOKEN], {}, tmp_path)
    send_client.parse_settings([], {}, tmp_path, ask_nickname=lambda: "Eve\n")  # as the prompt reads it
    assert [record for record in caplog.records if record.levelno >= logging.INFO] == []


@pytest.mark.parametrize("build", [read_client.build_parser, send_client.build_parser])
def test_each_port_says_which_it_is(build: object) -> None:
    parser = build()  # type: ignore[operator]
    helps = {option: action.help for action in parser._actions for option in action.option_strings}
    if build is read_client.build_parser:
        assert helps["--port"].startswith("reading port")
    else:
        assert helps["--port"].startswith("posting port")
        assert helps["--read-port"].startswith("reading port")


async def test_quiet_reader_says_only_warnings_and_errors(server: FakeMinechatServer, tmp_path: Path) -> None:
    process = await start_client(
        "read_client.py", "-q", "--log_path", "chat.log", port=server.write_port, cwd=tmp_path
    )  # the posting port: the reader says so, an error
    code, err = await finish(process)
    assert code == 2
    lines = err.splitlines()
    assert lines and all(" ERROR " in line or " WARNING " in line for line in lines), err
    assert not any("connecting to" in line for line in lines)


async def test_quiet_sender_says_only_warnings_and_errors(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Eve", TOKEN)
    argv = ["--token", TOKEN, "--message", "hi", "--quiet", *watching(server)]
    process = await start_client("send_client.py", *argv, port=server.write_port, cwd=tmp_path)
    code, err = await finish(process)
    assert (code, err) == (0, "")
    assert [post.lines for post in server.posts] == [["hi"]]


def test_quiet_and_verbose_together_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        read_client.parse_settings(["-q", "-v"], {}, tmp_path)
    assert stopped.value.code == 2
    assert "-q/--quiet" in capsys.readouterr().err
    # A VERBOSE left in .env gives way to -q on the command line.
    (tmp_path / ".env").write_text("VERBOSE=true\n", encoding="utf-8")
    settings = read_client.parse_settings(["-q"], {}, tmp_path)
    assert (settings.quiet, settings.verbose) == (True, False)


async def test_verbose_shows_our_debug_lines_not_asyncios(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.add_account("Eve", TOKEN)
    process = await start_client(
        "send_client.py", "--token", TOKEN, "--check", "-v", port=server.write_port, cwd=tmp_path
    )
    code, err = await finish(process)
    assert code == 0, err
    assert any(" DEBUG >> " in line for line in err.splitlines()), err
    assert "Using selector" not in err
    reader = await start_client("read_client.py", "-v", "--log_path", "chat.log", port=server.write_port, cwd=tmp_path)
    code, err = await finish(reader)
    assert code == 2
    assert " DEBUG " in err
    assert "Using selector" not in err


def test_dotenv_values_are_verbatim(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MESSAGE=costs ${HOME} and $USER, ${MISSING:-x}\n", encoding="utf-8")
    settings = send_client.parse_settings(["--token", TOKEN], {"HOME": "/home/eve", "USER": "eve"}, tmp_path)
    assert settings.messages == ("costs ${HOME} and $USER, ${MISSING:-x}",)


def test_a_dotenv_that_is_not_text_gives_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    junk = bytes(range(256)) * 64
    (tmp_path / ".env").write_bytes(b"\n".join(junk[i : i + 61] for i in range(0, len(junk), 61)))
    read_client.parse_settings([], {}, tmp_path)
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings[:5]
    assert str(tmp_path / ".env") in warnings[0] and "not UTF-8 text" in warnings[0]
    assert "\n" not in warnings[0]
