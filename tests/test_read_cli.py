"""read_client's command line: settings and their sources, usage errors, --help, main() and the process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fake_server import GREETING, FakeMinechatServer
from helpers import (
    ISO_FORMAT,
    ODD_OFFSET,
    ODD_ZONE,
    POSIX_ONLY,
    WAIT,
    StartReader,
    chat_of,
    client_env,
    client_process_sync,
    finish,
    free_port,
    read_history,
    read_main,
    reader_process,
    refuse_to_open,
    run_read_main,
    running_reader,
    start_client,
    status_of,
    stop_with_signal,
    wait_for_file,
)

import read_client
from _minechat.stamping import format_stamp


def odd_zone_now() -> datetime:
    """Return the wall-clock time in ODD_ZONE."""
    return datetime.now(timezone.utc).replace(tzinfo=None) + ODD_OFFSET


def test_options_from_the_environment_and_the_command_line(tmp_path: Path) -> None:
    environ = {
        "MINECHAT_TIME_FORMAT": ISO_FORMAT,
        "MINECHAT_FORMAT": "jsonl",
        "MINECHAT_BACKLOG": "0",
        "MINECHAT_LOG_PATH": "logs/%Y/%m-%d.txt",
    }
    settings = read_client.parse_settings([], environ, tmp_path)
    assert (settings.time_format, settings.history_format, settings.backlog) == (ISO_FORMAT, "jsonl", 0)
    assert settings.log_path == tmp_path / "logs/%Y/%m-%d.txt"
    argv = ["--time-format", "%H:%M:%S", "--format", "text", "--backlog", "3"]
    settings = read_client.parse_settings(argv, environ, tmp_path)
    assert (settings.time_format, settings.history_format, settings.backlog) == ("%H:%M:%S", "text", 3)
    defaults = read_client.parse_settings([], {}, tmp_path)
    assert (defaults.time_format, defaults.history_format, defaults.backlog) == ("[%d.%m.%y %H:%M]", "text", 10)


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"MINECHAT_FORMAT": "xml"}, "MINECHAT_FORMAT=xml (from the environment): expected one of text, jsonl"),
        ({"MINECHAT_BACKLOG": "-1"}, "MINECHAT_BACKLOG=-1 (from the environment): -1 is less than 0"),
        ({"MINECHAT_BACKLOG": "many"}, "MINECHAT_BACKLOG=many (from the environment): 'many' is not a number of lines"),
        (
            {"MINECHAT_TIME_FORMAT": "%H\n%M"},
            "MINECHAT_TIME_FORMAT=%H\\n%M (from the environment): it gives a stamp with control",
        ),
        (
            {"MINECHAT_LOG_PATH": "50%.log"},
            "MINECHAT_LOG_PATH=50%.log (from the environment): %. is no date or time field",
        ),
    ],
)
def test_bad_values_name_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], environ, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert len(err.splitlines()) == 1


def test_a_time_format_with_a_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], {"MINECHAT_TIME_FORMAT": "%H:%M\x00 %d.%m.%y"}, tmp_path)
    assert stop.value.code == 2


@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_bad_port_is_a_usage_error(
    port: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = read_main([f"--port={port}"], capsys)
    assert code == 2
    assert "argument --port" in err
    assert "Traceback" not in err
    assert not (tmp_path / "chat_logs.txt").exists()


@POSIX_ONLY
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, -signal.SIGTERM)])
async def test_signal_stops_cleanly_with_lines_on_disk(
    server: FakeMinechatServer, tmp_path: Path, signum: int, code: int
) -> None:
    history = tmp_path / "chat.log"
    async with reader_process(
        server,
        history,
        cwd=tmp_path,
        # No PYTHONUNBUFFERED (client_env drops it): the lines arrive only if the client flushes them.
        env=client_env(TZ=ODD_ZONE),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            before = odd_zone_now()
            await server.broadcast(b"A: one\nA: two\nA: unfinish")
            printed = []
            for expected in (b"A: one", b"A: two"):
                line = await asyncio.wait_for(process.stdout.readline(), WAIT)
                assert line.rstrip(b"\n").endswith(expected)
                printed.append(line.decode().rstrip("\n"))
            after = odd_zone_now()
        finally:
            returncode = await stop_with_signal(process, signum)
    stderr = (await process.stderr.read()).decode()
    assert returncode == code
    assert "Traceback" not in stderr
    # Stamped with the local time of the client's zone, not UTC and not the caller's zone.
    stamps = {format_stamp(before), format_stamp(after)}
    assert all(line[: len(format_stamp(before))] in stamps for line in printed)
    lines = read_history(history)
    assert printed == lines[2:4]
    # The unfinished line was received, so it is on disk too.
    assert chat_of(lines) == ["A: one", "A: two", "A: unfinish"]
    assert status_of(lines)[-1] == "*** stopped by " + signal.Signals(signum).name


@pytest.mark.parametrize(
    ("argv", "environ", "dotenv", "host", "port", "log_path"),
    [
        ([], {}, None, "minechat.dvmn.org", 5000, "chat_logs.txt"),
        ([], {}, "HOST=dotenv.example\nREAD_PORT=5001\nLOG_PATH=d.log\n", "dotenv.example", 5001, "d.log"),
        (
            [],
            {"MINECHAT_HOST": "env.example", "MINECHAT_LOG_PATH": "e.log"},
            "HOST=dotenv.example\nREAD_PORT=5001\n",
            "env.example",
            5001,
            "e.log",
        ),
        (
            ["--host", "cli.example", "--log-path", "c.log"],
            {"MINECHAT_HOST": "env.example"},
            "HOST=dotenv.example\n",
            "cli.example",
            5000,
            "c.log",
        ),
        (
            ["--port", "6000", "--log_path", "u.log"],
            {"MINECHAT_READ_PORT": "5002"},
            "READ_PORT=5001\n",
            "minechat.dvmn.org",
            6000,
            "u.log",
        ),
        ([], {"MINECHAT_SEND_PORT": "7000"}, "SEND_PORT=7001\n", "minechat.dvmn.org", 5000, "chat_logs.txt"),
    ],
)
def test_configuration_precedence(
    tmp_path: Path, argv: list[str], environ: dict[str, str], dotenv: str | None, host: str, port: int, log_path: str
) -> None:
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    settings = read_client.parse_settings(argv, environ, tmp_path)
    assert settings == replace(settings, host=host, port=port, log_path=tmp_path / log_path)


@pytest.mark.parametrize(
    ("environ", "dotenv", "complaint"),
    [
        ({"MINECHAT_READ_PORT": "0"}, None, "MINECHAT_READ_PORT=0 (from the environment): 0 is outside 1..65535"),
        ({}, "READ_PORT=0\n", "READ_PORT=0 (from {dotenv}): 0 is outside 1..65535"),
        ({}, "CONNECT_TIMEOUT=-1\n", "CONNECT_TIMEOUT=-1 (from {dotenv}): -1 must be more than 0"),
        (
            {"MINECHAT_VERBOSE": "maybe"},
            None,
            "MINECHAT_VERBOSE=maybe (from the environment): expected one of true, yes, on, 1, false",
        ),
        (
            {"MINECHAT_HOST": "minechat..dvmn.org"},
            None,
            "MINECHAT_HOST=minechat..dvmn.org (from the environment): 'minechat..dvmn.org' is",
        ),
        ({}, "HOST=[minechat.dvmn.org]\n", "HOST=[minechat.dvmn.org] (from {dotenv}): '[minechat.dvmn.org]': only an"),
    ],
)
def test_usage_errors_name_the_variable_and_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], dotenv: str | None, complaint: str
) -> None:
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], environ, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint.format(dotenv=tmp_path / ".env") in err
    assert "argument --" not in err
    assert len(err.splitlines()) == 1


def test_command_line_overrides_a_bad_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOST=minechat..dvmn.org\n")
    settings = read_client.parse_settings(["--port", "5001", "--host=h.example"], {"MINECHAT_READ_PORT": "0"}, tmp_path)
    assert (settings.host, settings.port) == ("h.example", 5001)


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOST=\nREAD_PORT=\nLOG_PATH=\nCONNECT_TIMEOUT=\nVERBOSE=\n")
    settings = read_client.parse_settings([], {"MINECHAT_HOST": "", "MINECHAT_READ_PORT": ""}, tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    assert settings == replace(read_client.parse_settings([], {}, bare), log_path=tmp_path / "chat_logs.txt")


@pytest.mark.parametrize("argv", [["--log", "x.log"], ["--verb"], ["--hos", "h.example"], ["--connect", "3"]])
def test_abbreviations_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings(argv, {}, tmp_path)
    assert stop.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_bracketed_ipv6_host_is_accepted(tmp_path: Path) -> None:
    assert read_client.parse_settings(["--host", "[::1]"], {}, tmp_path).host == "::1"


async def test_ipv6_address_is_shown_in_brackets(start_reader: StartReader) -> None:
    port = free_port()
    reader = await start_reader(port=port, host="::1")
    await reader.delays.wait_for_taken(2)  # the first failure is noted before the second delay is taken
    await wait_for_file(reader.path, lambda data: b"*** cannot connect" in data)  # and the journal writes it soon after
    statuses = status_of(read_history(reader.path))
    assert statuses[0] == f"*** connecting to [::1]:{port}"
    assert statuses[1].startswith(f"*** cannot connect to [::1]:{port}: ")


@pytest.mark.parametrize("host", ["minechat..dvmn.org", ".minechat.dvmn.org", "a" * 64 + ".dvmn.org"])
def test_host_that_idna_refuses_is_a_usage_error(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = read_main(["--host", host, "--log_path", "chat.log"], capsys)
    assert code == 2
    assert f"argument --host: '{host}' is not a host name" in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "chat.log").exists()


@POSIX_ONLY
def test_invalid_utf8_host_is_a_usage_error(tmp_path: Path) -> None:
    # Bytes, as a shell passes them: Python decodes h\xff to a lone surrogate that UTF-8 cannot encode.
    with client_process_sync(
        "read_client.py", b"--host", b"h\xff", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        _, stderr = process.communicate(timeout=WAIT * 4)
    err = stderr.decode(errors="replace")
    assert process.returncode == 2, err
    assert err.endswith("error: argument --host: not valid UTF-8 text\n")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "chat_logs.txt").exists()


def test_dotenv_that_is_not_utf8_is_read_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(b"# \xcf\xf0\xe8\xec\xe5\xf0\nREAD_PORT=0\n")  # a comment in cp1251
    code, err = read_main([], capsys)
    assert code == 2
    assert "Traceback" not in err
    warning, error = err.splitlines()
    dotenv = Path.cwd() / ".env"
    assert warning.endswith(f"WARNING skipping line 1 of {dotenv}: not UTF-8 text; save the file as UTF-8")
    assert error.endswith(f"error: READ_PORT=0 (from {dotenv}): 0 is outside 1..65535")


def test_unreadable_dotenv_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("HOST=127.0.0.1\n")

    refuse_to_open(monkeypatch, ".env")
    code, err = read_main([], capsys)
    assert code == 2
    dotenv = Path.cwd() / ".env"
    assert err.endswith(f"error: cannot read {dotenv}: Permission denied; fix its permissions or remove it\n")
    assert len(err.splitlines()) == 1


def test_help_names_every_variable_and_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings(["--help"], {}, tmp_path)
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        "HOST",
        "READ_PORT",
        "LOG_PATH",
        "CONNECT_TIMEOUT",
        "VERBOSE",
        "minechat.dvmn.org",
        "5000",
        "chat_logs.txt",
    ):
        assert expected in text


@pytest.mark.parametrize("verbose", [False, True])
async def test_cli_posting_port_is_exit_2_with_one_error_line(
    server: FakeMinechatServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    verbose: bool,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--log_path", "chat.log", *(["-v"] * verbose)]
    assert await run_read_main(argv, tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.splitlines()
    address = f"127.0.0.1:{server.write_port}"
    errors = [line for line in err if " ERROR " in line]
    assert [line.split(" ", 1)[1] for line in errors] == [
        f"ERROR {address} is minechat's posting port, not the chat stream; "
        "read the chat from port 5000 (--port or READ_PORT)"
    ]
    assert any(" DEBUG << b'Hello %username%" in line for line in err) is verbose
    assert status_of(read_history(tmp_path / "chat.log")) == [
        f"*** connecting to {address}",
        f"*** connected to {address}",
    ]
    assert chat_of(read_history(tmp_path / "chat.log")) == []


@POSIX_ONLY
@pytest.mark.usefixtures("default_signal_handlers")
async def test_a_signal_stops_the_reader_with_a_note(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"A: last\n")
        await reader.out.wait_for_lines(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(reader.task, WAIT) == 128 + signal.SIGTERM
    assert status_of(read_history(path))[-1] == "*** stopped by SIGTERM"
    assert chat_of(read_history(path)) == ["A: last"]


def test_settings_spellings(tmp_path: Path) -> None:
    settings = read_client.parse_settings(
        ["--connect-timeout", "3", "--log-path", "x.log", "--port", "65535"], {}, tmp_path
    )
    assert (settings.connect_timeout, settings.log_path, settings.port) == (3.0, tmp_path / "x.log", 65535)
    text = " ".join(read_client.build_parser().format_help().split())
    assert "Tail the minechat chat: print every line and append it, stamped, to a history file." in text


async def test_cli_prints_chat_to_stdout_until_a_fatal_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = [b"A: hi\n", GREETING]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(replies.pop(0) if replies else b"")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        argv = ["--host", "127.0.0.1", "--port", str(port), "--log_path", "chat.log"]
        assert await run_read_main(argv, tmp_path, monkeypatch) == 2
    finally:
        listener.close()
        await listener.wait_closed()
    out, err = capsys.readouterr()
    assert chat_of(out.splitlines()) == ["A: hi"]
    assert chat_of(read_history(tmp_path / "chat.log")) == ["A: hi"]
    assert "is minechat's posting port" in err


@POSIX_ONLY
async def test_sighup_stops_cleanly(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    async with reader_process(server, history, stdout=subprocess.DEVNULL) as process:
        try:
            await server.broadcast(b"A: one\n")
            await wait_for_file(history, lambda data: b"A: one" in data)
        finally:
            code = await stop_with_signal(process, signal.SIGHUP)
    assert code == -signal.SIGHUP
    assert status_of(read_history(history))[-1] == "*** stopped by SIGHUP"


async def test_posting_port_is_recognised(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    process = await start_client(
        "read_client.py", "--log_path", str(history), port=server.write_port, cwd=history.parent
    )
    code, err = await finish(process)
    assert code == 2
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "5000" in errors[0] and str(server.write_port) in errors[0]
    assert "Traceback" not in err
    assert "Hello %username%" not in history.read_text(encoding="utf-8")


def test_ctrl_c_while_reading_settings_gives_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Reading a large .env can take a while; Ctrl-C then lands in parse_settings.
    def interrupted(argv: object = None) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(read_client, "parse_settings", interrupted)
    assert read_client.main([]) == 130
    assert "Traceback" not in capsys.readouterr().err
