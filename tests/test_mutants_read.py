"""read_client behaviours that mutation testing found unchecked: each test here kills mutants the rest let live."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import stat
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from conftest import WAIT, FakeTime, RecordingDelays, RecordingOut
from fake_server import GREETING, FakeMinechatServer
from test_read_client import chat_of, read_history, status_of
from test_read_faults import running_reader

import _minechat.history
import _minechat.output
import read_client
from _minechat.history import DiskFull
from _minechat.stamping import DEFAULT_TIME_FORMAT, StampClock
from chat_io import MAX_LINE_BYTES, AlreadyRunning, FileError
from read_client import ReaderSettings

LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_LINGER resets as Linux sends them")
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
BIDI_ESCAPED = "".join(f"\\u{ord(char):04x}" for char in BIDI_CONTROLS)


async def test_bidi_controls_are_escaped_in_stdout_and_history(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as (_, out, _):
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(f"Eve: {BIDI_CONTROLS}txt\n".encode())
        await out.wait_for_lines(1)
    assert chat_of(out.lines) == [f"Eve: {BIDI_ESCAPED}txt"]
    assert chat_of(read_history(path)) == [f"Eve: {BIDI_ESCAPED}txt"]


async def test_a_long_line_is_cut_between_characters(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    # The first cut falls inside the emoji unless it backs up over all three continuation bytes.
    line = "E: " + "a" * (MAX_LINE_BYTES - 4) + "😀" * 4 + "b" * MAX_LINE_BYTES
    async with running_reader(server, path) as (_, out, _):
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(f"{line}\nBob: after\n".encode())
        await out.wait_for_lines(2)
    assert chat_of(read_history(path)) == [line, "Bob: after"]


@LINUX_ONLY
async def test_a_reset_mid_read_is_retried(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as (_, out, delays):
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"A: before\nA: unfinish")
        await server.reset_readers(wait_acked=True)
        await server.wait_until(lambda: len(server.readers) == 1 and server.reader_connections == 2)
        await server.broadcast(b"A: after\n")
        await out.wait_for_lines(3)
    assert chat_of(read_history(path)) == ["A: before", "A: unfinish", "A: after"]
    assert delays.resets == 2  # the first connection delivered a whole line: backoff starts over
    lost = [line for line in status_of(read_history(path)) if line.startswith("*** connection lost")]
    assert lost == ["*** connection lost: Connection reset by peer; next try in 0.0 s"]


async def test_backoff_delay_is_really_waited(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.close_readers_at_once = True
    settings = ReaderSettings("127.0.0.1", server.read_port, tmp_path / "chat.log", WAIT, verbose=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.ensure_future(read_client.run(settings, RecordingOut(), lambda: itertools.repeat(0.2)))
    try:
        await server.wait_until(lambda: server.reader_connections >= 3, timeout=WAIT)
        assert loop.time() - started >= 0.4
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert status_of(read_history(settings.log_path))[2] == (
        "*** connection lost: the server closed the connection; next try in 0.2 s"
    )


async def run_main(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run read_client.main in-process (in a thread, as it runs its own event loop); return its exit code."""
    monkeypatch.chdir(cwd)

    def call() -> int:
        try:
            return read_client.main(argv)
        except SystemExit as stop:  # a usage error, through argparse
            assert isinstance(stop.code, int)
            return stop.code

    return await asyncio.wait_for(asyncio.to_thread(call), WAIT * 2)


@pytest.mark.parametrize("verbose", [False, True])
async def test_cli_posting_port_is_exit_2_with_one_error_line(
    server: FakeMinechatServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    verbose: bool,
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(server.write_port), "--log_path", "chat.log", *(["-v"] * verbose)]
    assert await run_main(argv, tmp_path, monkeypatch) == 2
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


# --- the history file and its lock --------------------------------------------------------------

# A fixed moment and the stamp DEFAULT_TIME_FORMAT gives it in local time.
FIXED_TIME = datetime(2026, 3, 4, 5, 6, 7).timestamp()
FIXED_STAMP = "[04.03.26 05:06]"


def fixed_clock(pattern: _minechat.history.HistoryPattern | None = None) -> StampClock:
    """Return the clock run() would build for a pattern, stopped at FIXED_TIME."""
    expand = pattern.expand if pattern is not None else (lambda when: "")
    return StampClock(DEFAULT_TIME_FORMAT, expand, FakeTime(FIXED_TIME))


def make_history(path: Path) -> _minechat.history.HistoryFile:
    """Return a text history file for path, as run() builds it, not yet open."""
    pattern = _minechat.history.HistoryPattern(path)
    return _minechat.history.HistoryFile(pattern, _minechat.history.HISTORY_FORMATS["text"], fixed_clock(pattern))


def open_history(path: Path) -> _minechat.history.HistoryFile:
    """Return a text history file for path, open and locked."""
    history = make_history(path)
    history.open(str(path))
    return history


@pytest.mark.skipif(sys.platform == "win32", reason="flock semantics")
def test_second_history_file_on_one_path_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    first = open_history(path)
    try:
        second = make_history(path)
        with pytest.raises(AlreadyRunning) as caught:
            second.open(str(path))
        assert str(caught.value) == (
            f"{path} is already being written by another read_client (process {os.getpid()}); "
            "stop that one, or give this one another --log_path"
        )
        assert (tmp_path / ".chat.log.read_client.lock").read_text() == f"{os.getpid()}\n"
    finally:
        first.close()
    second.open(str(path))  # the lock went with the first
    second.close()


def test_lock_holder_that_is_not_a_number_is_unknown(tmp_path: Path) -> None:
    # The holder is now None when unknown (it was "?"), and already_running() then names no process.
    path = tmp_path / "lock"
    for content, holder in ((b"garbage\n", None), (b"\xff\xfe12\n", None), (b"", None), (b" 4321 \n", "4321")):
        path.write_bytes(content)
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.lseek(descriptor, 0, os.SEEK_END)  # read_holder reads from the start, wherever the file is
            assert _minechat.history.read_holder(descriptor) == holder
        finally:
            os.close(descriptor)
    assert _minechat.history.read_holder(descriptor) is None  # closed: an OSError
    assert _minechat.history.read_holder(None) is None
    assert str(_minechat.history.already_running(path, None)) == (
        f"{path} is already being written by another read_client; stop that one, or give this one another --log_path"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_lock_is_next_to_the_real_file(tmp_path: Path) -> None:
    # The lock file is now hidden and named for read_client: .NAME.read_client.lock beside the real file.
    (tmp_path / "real").mkdir()
    (tmp_path / "link.log").symlink_to(tmp_path / "real" / "chat.log")
    expected = tmp_path / "real" / ".chat.log.read_client.lock"
    assert _minechat.history.lock_path_for(tmp_path / "link.log") == expected
    assert _minechat.history.HistoryPattern(tmp_path / "link.log").lock_path() == expected


def test_history_write_adds_text_whole_after_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(b"old")
    history = open_history(path)
    try:
        history.write([(str(path), "a\n")])
        history.write([(str(path), "b\n")])
    finally:
        history.close()
    history.close()  # closing twice is harmless
    assert path.read_bytes() == b"old\na\nb\n"


# --- the journal ---------------------------------------------------------------------------------


async def test_journal_pauses_the_connection_past_its_bound_and_resumes_once_taken() -> None:
    high = read_client.JOURNAL_HIGH_CHARS
    journal = read_client.Journal()
    calls: list[bool] = []
    journal.pause = calls.append
    text = "x" * high
    journal.add("a.log", text, text)  # shown as the very text written: counted once
    assert calls == []
    journal.add("a.log", "y", "y")
    journal.add("b.log", "z", "z")
    assert calls == [True]
    entries, shown = journal.take()
    assert entries == [("a.log", text + "y"), ("b.log", "z")] and shown == text + "yz"
    assert calls == [True, False]
    journal.add("a.log", text, text)  # counted afresh from nothing
    assert calls == [True, False]
    journal.take()
    half = high // 2
    journal.add("a.log", "t" * half, "s" * half)  # shown apart from the text: both count
    assert calls == [True, False]
    journal.add("a.log", "note")
    assert calls == [True, False, True]
    journal.take()
    journal.add("a.log", "note")
    journal.add("a.log", "")
    journal.add("b.log", "", "")
    assert journal.take() == ([("a.log", "note")], "")
    assert calls == [True, False, True, False] and journal.empty


# --- the head of a connection ----------------------------------------------------------------------


async def test_text_that_only_starts_like_the_greeting_is_chat(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.trickle_interval = 0.001  # byte by byte: the head is held across many reads
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as (_, out, _):
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"Hello %username%")
        await server.broadcast(b"! is my name\nBob: hi\n")
        await out.wait_for_lines(2)
    assert chat_of(read_history(path)) == ["Hello %username%! is my name", "Bob: hi"]


async def test_a_greeting_prefix_cut_by_the_close_is_kept(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.send_then_close = b"Hello"
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as (_, _, delays):
        await delays.wait_for_taken(1)
    assert chat_of(read_history(path))[0] == "Hello"


# --- stopping ------------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_a_signal_stops_the_reader_with_a_note(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as (task, out, _):
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"A: last\n")
        await out.wait_for_lines(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, WAIT) == 128 + signal.SIGTERM
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
        assert await run_main(argv, tmp_path, monkeypatch) == 2
    finally:
        listener.close()
        await listener.wait_closed()
    out, err = capsys.readouterr()
    assert chat_of(out.splitlines()) == ["A: hi"]
    assert chat_of(read_history(tmp_path / "chat.log")) == ["A: hi"]
    assert "is minechat's posting port" in err


# --- what stdout and stderr say --------------------------------------------------------------------


class BlockedOut:
    """A stdout that takes nothing until the test lets it."""

    def __init__(self) -> None:
        self.text = ""
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write(self, text: str) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT)
        self.text += text

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(("skipped", "what"), [("y\n", "1 line"), ("y\nz\n", "2 lines")])
def test_echo_says_how_many_lines_stdout_missed_and_where_they_are(tmp_path: Path, skipped: str, what: str) -> None:
    out = BlockedOut()
    echo = read_client.Echo(out, lambda: tmp_path / "chat.log", fixed_clock())  # type: ignore[arg-type]
    assert echo._writer._thread.name == "stdout"
    echo.show("first\n")
    assert out.entered.wait(WAIT)
    echo.show(skipped + "x" * _minechat.output.OUTPUT_LIMIT_CHARS)
    out.gate.set()
    echo.close()
    echo._writer._thread.join(WAIT)
    assert out.text == (
        f"first\n{FIXED_STAMP} *** {what} not shown here (stdout was too slow); they are in {tmp_path / 'chat.log'}\n"
    )


def test_echo_failure_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def write(self, text: str) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    echo = read_client.Echo(Broken(), lambda: tmp_path / "chat.log", fixed_clock())  # type: ignore[arg-type]
    echo.show("a\n")
    echo._writer._thread.join(WAIT)
    assert [record.getMessage() for record in caplog.records] == [
        "cannot print chat any more (Broken pipe); still writing the history file"
    ]


async def test_connection_events_are_logged_at_their_levels(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="read_client")
    server.close_readers_at_once = True
    async with running_reader(server, tmp_path / "chat.log") as (_, _, delays):
        await delays.wait_for_taken(1)
    address = f"127.0.0.1:{server.read_port}"
    assert [(record.levelno, record.getMessage()) for record in caplog.records][:3] == [
        (logging.INFO, f"connecting to {address}"),
        (logging.INFO, f"connected to {address}"),
        (logging.WARNING, "connection lost: the server closed the connection; next try in 0.0 s"),
    ]


# --- the history file follows its path -----------------------------------------------------------------


def test_history_moved_away_continues_in_a_new_file_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.log"
    history = open_history(path)
    try:
        history.write([(str(path), "a\n")])
        path.rename(tmp_path / "chat.log.1")
        history.write([(str(path), "b\n")])
    finally:
        history.close()
    assert (tmp_path / "chat.log.1").read_bytes() == b"a\n"
    assert path.read_bytes() == (
        f"{FIXED_STAMP} *** history continues here; the earlier file was moved or deleted\nb\n".encode()
    )
    assert [record.getMessage() for record in caplog.records] == [
        f"history file {path} was moved or deleted; continuing in a new one"
    ]


def test_one_byte_history_without_newline_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(b"x")
    history = open_history(path)
    try:
        history.write([(str(path), "a\n")])
    finally:
        history.close()
    assert path.read_bytes() == b"x\na\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_lock_file_is_owner_only(tmp_path: Path) -> None:
    history = open_history(tmp_path / "chat.log")
    history.close()
    assert stat.S_IMODE((tmp_path / ".chat.log.read_client.lock").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "chat.log").stat().st_mode) == 0o600


def test_full_disk_while_writing_the_history_is_a_pause(tiny_disk: Path) -> None:
    path = tiny_disk / "chat.log"
    history = open_history(path)
    try:
        with pytest.raises(DiskFull) as caught:
            history.write([(str(path), "x" * 1024 * 1024)])
    finally:
        history.close()
    assert caught.value.unwritten == []  # the one entry was begun: its rest is kept by the history


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's full-backlog behaviour")
async def test_connecting_has_the_configured_timeout(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            settings = ReaderSettings("127.0.0.1", port, tmp_path / "chat.log", 0.3, verbose=False)
            delays = RecordingDelays()
            task = asyncio.ensure_future(read_client.run(settings, RecordingOut(), delays))
            try:
                await delays.wait_for_taken(1)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            for filler in fillers:
                filler.close()
    notes = status_of(read_history(tmp_path / "chat.log"))
    assert notes[1] == (
        f"*** no answer from 127.0.0.1:{port} within 0.3 s; check the address or raise --connect-timeout; "
        "next try in 0.0 s"
    )


def test_unusable_history_path_says_why(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "chat.log"
    history = make_history(path)
    with pytest.raises(FileError) as caught:
        history.open(str(path))
    assert str(caught.value) == (
        f"cannot open history file {path}: No such file or directory; choose another --log_path"
    )
    assert not (tmp_path / "missing").exists()  # an undated history makes no folders
