"""Watching the chat end to end: --ignore and --highlight on stdout and in the backlog, the history
untouched, the server's join notices and bots, on a terminal and on a pipe."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_server import ADJECTIVES, BOT_DIALOGUE, FakeMinechatServer
from helpers import (
    FIXED_TIME,
    POSIX_ONLY,
    TOKEN,
    WAIT,
    FakeTime,
    RecordingDelays,
    StartReader,
    chat_of,
    client_env,
    read_history,
    reader_process,
    reader_settings,
    run_sender,
    settings_for,
    start_reader_task,
    stop,
    stop_with_signal,
)

import read_client
import send_client
from _minechat.output import BELL, BOLD, NORMAL_INTENSITY, bold_and_ring, shows_escape_codes, terminal_marks
from chat_io import EXIT_USAGE, MAX_LINE_BYTES

NOTICE = "Server: # к чату присоединился Brave"
LONG = MAX_LINE_BYTES + 10  # a line the stampers give out in pieces


class BraveOnly(random.Random):
    """The fake server's choice of adjective, fixed: every new account is Brave."""

    def choice(self, seq: Sequence[str]) -> str:  # type: ignore[override]
        return "Brave"


def marked(line: str) -> str:
    return f"{BOLD}{line}{NORMAL_INTENSITY}"


# --- the options ------------------------------------------------------------------------------------------


def test_options_repeat_and_variables_take_comma_separated_lists(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("IGNORE=Eva, Vlad,Boring Eve,\nHIGHLIGHT=eve\n", encoding="utf-8")
    settings = read_client.parse_settings([], {}, tmp_path)
    assert (settings.ignore, settings.highlight) == (("Eva", "Vlad", "Boring Eve"), ("eve",))
    # The command line wins over .env, as for every option; each option is one item, commas and all.
    settings = read_client.parse_settings(["--ignore", "Server", "--ignore", "a,b"], {}, tmp_path)
    assert (settings.ignore, settings.highlight) == (("Server", "a,b"), ("eve",))
    (tmp_path / ".env").write_text("IGNORE= , \n", encoding="utf-8")
    assert read_client.parse_settings([], {}, tmp_path).ignore == ()
    # The environment, prefixed as every variable there, wins over .env.
    environ = {"MINECHAT_IGNORE": "Server, Boring Eve", "MINECHAT_HIGHLIGHT": "Loyd"}
    settings = read_client.parse_settings([], environ, tmp_path)
    assert (settings.ignore, settings.highlight) == (("Server", "Boring Eve"), ("Loyd",))


@pytest.mark.parametrize(
    ("argv", "dotenv", "complaint"),
    [
        (["--ignore", "Eva: x"], "", "argument --ignore: a nickname ends at the first ': ', so 'Eva: x' never matches"),
        (["--ignore", " "], "", "argument --ignore: it names no nickname"),
        (["--highlight", ""], "", "argument --highlight: it holds no word"),
        (["--highlight", "a\nb"], "", "argument --highlight: it holds control characters or line breaks"),
        (["--ignore", "Eva\x1b"], "", "argument --ignore: it holds control characters or line breaks"),
        ([], "IGNORE=Eva,Bob: x\n", "IGNORE=Eva,Bob: x (from {env}): a nickname ends at the first ': ', so 'Bob: x'"),
    ],
)
def test_a_nickname_or_word_that_can_never_match_is_a_usage_error(
    argv: list[str], dotenv: str, complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings(argv, {}, tmp_path)
    assert stop.value.code == EXIT_USAGE
    assert complaint.format(env=tmp_path / ".env") in capsys.readouterr().err


# --- the reader's view --------------------------------------------------------------------------------------


@pytest.mark.parametrize("history_format", ["text", "jsonl"])
async def test_the_view_leaves_the_history_byte_for_byte(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path, history_format: str
) -> None:
    now = FakeTime(FIXED_TIME)
    plain = await start_reader(log_path=tmp_path / "plain.log", now=now, history_format=history_format)
    viewed = await start_reader(
        log_path=tmp_path / "viewed.log",
        now=now,
        history_format=history_format,
        ignore=("Eva", "Server"),
        highlight=("eve", "loyd"),
        mark=bold_and_ring,
    )
    await server.wait_until(lambda: len(server.readers) == 2)
    long_vlad, long_eva = "Vlad: " + "в" * LONG, "Eva: " + "e" * LONG
    chat = ["Eva: bot", "Loyd: hi Eve!", NOTICE, long_vlad, long_eva, "Eva: eve", "Ann: loyd, loyd", "Loyd: end"]
    await server.broadcast("".join(line + "\n" for line in chat).encode())
    for reader in (plain, viewed):
        await reader.out.wait_for(lambda text: "Loyd: end" in text)
        await stop(reader)
    assert (tmp_path / "viewed.log").read_bytes() == (tmp_path / "plain.log").read_bytes()
    assert chat_of(plain.out.lines) == chat
    assert chat_of(viewed.out.lines) == [
        marked("Loyd: hi Eve!") + BELL,
        long_vlad,
        marked("Ann: loyd, loyd") + BELL,
        "Loyd: end",
    ]


@pytest.mark.parametrize("history_format", ["text", "jsonl"])
async def test_the_backlog_leaves_out_ignored_lines_and_marks_without_a_bell(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path, history_format: str
) -> None:
    path = tmp_path / "chat.log"
    chat = ["Ann: one", "Eva: bot", "Loyd: hi eve", NOTICE, "Ann: two", "Vlad: bot", "Eva: bot"]
    writer = await start_reader(log_path=path, history_format=history_format, backlog=0)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast("".join(line + "\n" for line in chat).encode())
    await writer.out.wait_for_lines(len(chat))
    await stop(writer)
    await server.wait_until(lambda: not server.readers)

    reader = await start_reader(
        log_path=path,
        history_format=history_format,
        backlog=3,
        ignore=("Eva", "Vlad", "Server"),
        highlight=("Eve",),
        mark=bold_and_ring,
    )
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Loyd: live\n")
    lines = await reader.out.wait_for_lines(5)
    # Three lines shown, counted among those shown; the marked one without a bell: it is old news.
    assert chat_of(lines[:3]) == ["Ann: one", marked("Loyd: hi eve"), "Ann: two"]
    assert "the last 3 chat lines of the history" in lines[3]
    assert chat_of(lines[4:]) == ["Loyd: live"]


async def test_join_notices_are_chat_lines_of_server_in_the_history_and_on_stdout(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    server.rng = BraveOnly()
    text = await start_reader(log_path=tmp_path / "chat.log")
    jsonl = await start_reader(log_path=tmp_path / "chat.jsonl", history_format="jsonl")
    hidden = await start_reader(log_path=tmp_path / "hidden.log", ignore=("Server",))
    await server.wait_until(lambda: len(server.readers) == 3)
    await run_sender(settings_for(server, tmp_path, "--nickname", "Eve"))
    assert list(server.accounts.values()) == ["Brave Eve"]
    await server.broadcast(b"Loyd: after\n")
    for reader in (text, jsonl, hidden):
        await reader.out.wait_for(lambda out: "Loyd: after" in out)
        await stop(reader)
    assert chat_of(text.out.lines) == chat_of(jsonl.out.lines) == [NOTICE, "Loyd: after"]
    assert chat_of(hidden.out.lines) == ["Loyd: after"]
    assert chat_of(read_history(tmp_path / "chat.log")) == [NOTICE, "Loyd: after"]
    assert chat_of(read_history(tmp_path / "hidden.log")) == [NOTICE, "Loyd: after"]
    records = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text(encoding="utf-8").splitlines()]
    chat_records = [record for record in records if "event" not in record]
    assert [(record["nick"], record["text"]) for record in chat_records] == [
        ("Server", "# к чату присоединился Brave"),
        ("Loyd", "after"),
    ]


def test_every_adjective_names_itself_in_its_notice() -> None:
    # The notice names the adjective alone, which a reader cannot tell from a nickname by its shape.
    assert all(" " not in adjective for adjective in ADJECTIVES)


async def test_a_join_notice_is_never_taken_for_one_of_our_posts(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    server.add_account("Focused Loyd", TOKEN)
    server.rng = BraveOnly()
    server.echo_posts = False  # the chat shows only the notice, never our post
    server.ack_gate = asyncio.Event()
    watcher = await start_reader(log_path=tmp_path / "chat.log")
    await server.wait_until(lambda: len(server.readers) == 1)
    settings = settings_for(server, tmp_path, "--token", TOKEN, "--message", "# к чату присоединился Brave", watch=True)
    sender = send_client.make_sender(settings, io.BytesIO(), RecordingDelays())
    task = asyncio.create_task(sender.run())
    await server.wait_until(lambda: len(server.posts) == 1 and len(server.readers) == 2)
    # Someone registers while our post awaits its acknowledgement: every reader, our witness too, gets the notice.
    other = tmp_path / "other"
    other.mkdir()
    await run_sender(settings_for(server, other, "--nickname", "Ann"))
    await watcher.out.wait_for(lambda out: NOTICE in out)
    assert sender.witness is not None
    assert sender.witness.core.matched == 0
    server.ack_gate.set()
    await asyncio.wait_for(task, WAIT)
    assert (sender.outbox.acknowledged, sender.outbox.seen_only) == (1, 0)
    assert [post.lines for post in server.posts] == [["# к чату присоединился Brave"]]


async def test_the_bots_chat_in_a_loop_and_ignore_hides_them(tmp_path: Path) -> None:
    async with FakeMinechatServer(bots=True, bot_interval=0.005) as server:
        readers = [
            start_reader_task(reader_settings(server, tmp_path / name, ignore=ignore))
            for name, ignore in (("plain.log", ()), ("viewed.log", ("Eva", "Vlad")))
        ]
        try:
            await server.wait_until(lambda: len(server.readers) == 2)
            first = server.bot_lines
            await server.wait_until(lambda: server.bot_lines >= first + 2 * len(BOT_DIALOGUE))
            await server.broadcast(b"Loyd: hi\n")
            for reader in readers:
                await reader.out.wait_for(lambda text: "Loyd: hi" in text)
        finally:
            for reader in readers:
                await stop(reader)
        outs = [reader.out for reader in readers]
    bots = [f"{nick}: {text}" for nick, text in BOT_DIALOGUE]
    shown = chat_of(outs[0].lines)
    shown.remove("Loyd: hi")  # the bots go on around it
    start = bots.index(shown[0])
    assert shown == [bots[(start + index) % len(bots)] for index in range(len(shown))]
    assert len(shown) >= 2 * len(bots)
    assert chat_of(outs[1].lines) == ["Loyd: hi"]
    kept = chat_of(read_history(tmp_path / "viewed.log"))
    kept.remove("Loyd: hi")
    assert set(kept) == set(bots) and len(kept) >= 2 * len(bots)


async def test_verbose_counts_the_lines_left_out_in_one_debug_line(
    server: FakeMinechatServer, start_reader: StartReader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="read_client")
    reader = await start_reader(ignore=("Eva", "Vlad"))
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Eva: a\nVlad: b\nLoyd: c\nEva: " + b"d" * LONG + b"\nLoyd: end\n")
    await reader.out.wait_for(lambda text: "Loyd: end" in text)
    await stop(reader)
    counts = [record.getMessage() for record in caplog.records if "not shown" in record.getMessage()]
    assert counts == ["3 lines of ignored nicknames not shown from this connection"]
    assert chat_of(reader.out.lines) == ["Loyd: c", "Loyd: end"]


# --- on a terminal and on a pipe, as a process -------------------------------------------------------------


async def read_terminal(controller: int, needle: bytes) -> bytes:
    """Read a pseudo-terminal's output until it holds needle; return all of it."""
    loop = asyncio.get_running_loop()
    seen = bytearray()
    arrived = asyncio.Event()

    def take() -> None:
        try:
            seen.extend(os.read(controller, 64 * 1024))
        except OSError:  # the other side is closed
            loop.remove_reader(controller)
        arrived.set()

    loop.add_reader(controller, take)
    try:

        async def wait() -> None:
            while needle not in seen:
                arrived.clear()
                await arrived.wait()

        await asyncio.wait_for(wait(), WAIT)
    finally:
        loop.remove_reader(controller)
    return bytes(seen)


async def watch_on_terminal(server: FakeMinechatServer, tmp_path: Path, **env: str) -> bytes:
    """Run read_client with --highlight eve, stdout a pseudo-terminal; return what it showed of two lines."""
    import pty  # POSIX only

    controller, terminal = pty.openpty()
    environment = {key: value for key, value in client_env(**env).items() if env.get(key) or key != "NO_COLOR"}
    try:
        argv = ("--highlight", "eve", "--ignore", "Eva")
        async with reader_process(server, tmp_path / "chat.log", *argv, stdout=terminal, env=environment) as process:
            os.close(terminal)
            terminal = -1
            await server.broadcast(b"Loyd: hi eve\nEva: eve\nLoyd: plain\n")
            shown = await read_terminal(controller, b"Loyd: plain")
            assert await stop_with_signal(process, signal.SIGINT) == -signal.SIGINT
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return shown


@POSIX_ONLY
async def test_a_highlighted_line_rings_once_and_is_bold_on_a_terminal(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    shown = await watch_on_terminal(server, tmp_path)
    assert shown.count(BELL.encode()) == 1
    assert f"{BOLD}Loyd: hi eve{NORMAL_INTENSITY}{BELL}".encode() in shown
    assert b"Eva" not in shown
    assert f"{NORMAL_INTENSITY}{BELL}\r\n".encode() in shown  # the line's end is back to normal text


@POSIX_ONLY
async def test_no_color_leaves_the_text_plain_and_keeps_the_bell(server: FakeMinechatServer, tmp_path: Path) -> None:
    shown = await watch_on_terminal(server, tmp_path, NO_COLOR="1")
    assert shown.count(BELL.encode()) == 1
    assert b"\x1b" not in shown
    assert f"Loyd: hi eve{BELL}".encode() in shown


@POSIX_ONLY
async def test_a_pipe_gets_no_escape_code_and_no_bell(server: FakeMinechatServer, tmp_path: Path) -> None:
    async with reader_process(server, tmp_path / "chat.log", "--highlight", "eve", "--ignore", "Eva") as process:
        await server.broadcast(b"Loyd: hi eve\nEva: eve\nLoyd: plain\n")
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), WAIT)).decode() for _ in range(2)]
        assert await stop_with_signal(process, signal.SIGINT) == -signal.SIGINT
    assert [line.rstrip("\n") for line in chat_of(lines)] == ["Loyd: hi eve", "Loyd: plain"]
    history = (tmp_path / "chat.log").read_text(encoding="utf-8")
    assert "\x1b" not in history and BELL not in history
    assert chat_of(read_history(tmp_path / "chat.log")) == ["Loyd: hi eve", "Eva: eve", "Loyd: plain"]


class Stream:
    """A stand-in stdout that says whether it is a terminal."""

    def __init__(self, terminal: bool | None) -> None:
        self.terminal = terminal

    def isatty(self) -> bool:
        if self.terminal is None:
            raise ValueError("I/O operation on closed file")
        return self.terminal


@pytest.mark.parametrize(
    ("terminal", "environ", "shown"),
    [
        (True, {}, f"{BOLD}Loyd: hi eve{NORMAL_INTENSITY}{BELL}"),
        (True, {"NO_COLOR": "1"}, f"Loyd: hi eve{BELL}"),
        (True, {"NO_COLOR": ""}, f"{BOLD}Loyd: hi eve{NORMAL_INTENSITY}{BELL}"),  # empty: unset, as no-color.org says
        (False, {}, None),
        (None, {}, None),
    ],
)
def test_terminal_marks(terminal: bool | None, environ: dict[str, str], shown: str | None) -> None:
    mark = terminal_marks(Stream(terminal), environ)  # type: ignore[arg-type]
    assert (mark("Loyd: hi eve", True) if mark else None) == shown
    if mark is not None:
        assert BELL not in mark("Loyd: hi eve", False)


@pytest.mark.skipif(sys.platform == "win32", reason="a console is asked on Windows")
def test_every_other_terminal_shows_escape_codes() -> None:
    assert shows_escape_codes(Stream(True))  # type: ignore[arg-type]
