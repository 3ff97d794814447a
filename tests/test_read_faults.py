"""read_client under faults: floods stopped at random moments, blocked outputs, long lines, memory bounds."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    FILE_POLL_SECONDS,
    FIXED_STAMP,
    FLOOD_WAIT,
    FORGED_IN_LONG_LINE,
    LINUX_ONLY,
    POSIX_ONLY,
    STAMP,
    STOP_WAIT,
    WAIT,
    RecordingOut,
    StartReader,
    chat_of,
    fixed_clock,
    numbered,
    numbers_of,
    read_history,
    reader_process,
    running_reader,
    send_signal,
    status_of,
    stop_with_signal,
    wait_for_file,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.recorder
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from chat_io import MAX_LINE_BYTES, READ_CHUNK_BYTES, STREAM_LIMIT_BYTES


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


class ClosedPipe(RecordingOut):
    """A stdout whose reader has gone away, as after `read_client.py | head -1`."""

    def write(self, text: str) -> int:
        super().write(text)
        raise BrokenPipeError(32, "Broken pipe")


def peak_rss_kb(pid: int) -> int:
    """Return a process's peak resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


class UnreadPipe:
    """An OS pipe whose read end the test holds and reads only when it chooses: a paused pager.

    (asyncio's own pipes would make Process.wait() wait for their end, which an unread pipe never reaches.)
    """

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)

    def close_write_end(self) -> None:
        os.close(self.write_end)

    async def read_until(self, pattern: bytes, timeout: float = WAIT) -> bytes:
        """Read what is there until pattern shows up; fail after timeout."""
        data = b""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, data):
            try:
                chunk = os.read(self.read_end, 65536)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                break
            if chunk:
                data += chunk
                continue
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(FILE_POLL_SECONDS)
        return data

    def close(self) -> None:
        os.close(self.read_end)


FORGED = b"[28.11.26 16:52] Admin: the server moves, log in at evil.example"


SKIPPED = "not shown here (stdout was too slow)"


@pytest.mark.slow
@POSIX_ONLY
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM])
async def test_stop_at_a_random_moment_of_a_flood_leaves_no_gap(
    server: FakeMinechatServer, tmp_path: Path, signum: int
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    history = tmp_path / "chat.log"
    async with reader_process(
        server,
        history,
        stdout=subprocess.DEVNULL,
    ) as process:
        flood: asyncio.Task[None] | None = None
        try:
            count = 150_000
            flood = asyncio.create_task(server.broadcast(numbered(1, count)))
            threshold = rng.randrange(1, 3_000_000)
            await wait_for_file(history, lambda data: len(data) >= threshold)
        finally:
            code = await stop_with_signal(process, signum)
            if flood is not None:
                flood.cancel()
                with suppress(asyncio.CancelledError, OSError):
                    await flood
    lines = read_history(history)
    got = numbers_of(chat_of(lines))
    assert code == -signum, f"seed {seed}"
    assert got == list(range(1, len(got) + 1)), f"seed {seed}: a gap or a double"
    assert status_of(lines)[-1] == "*** stopped by " + signal.Signals(signum).name, f"seed {seed}"


# --- stdout is only a view -----------------------------------------------------


@pytest.mark.slow
@POSIX_ONLY
@pytest.mark.parametrize("verbose", [False, True])
async def test_stdout_nobody_reads_does_not_stall_the_history(
    server: FakeMinechatServer, tmp_path: Path, verbose: bool
) -> None:
    history = tmp_path / "chat.log"
    # Both outputs are read by nobody until the flood is on disk: a pager paused, Ctrl-S.
    out, err = UnreadPipe(), UnreadPipe()
    async with reader_process(
        server,
        history,
        *(["-v"] if verbose else []),
        stdout=out.write_end,
        stderr=err.write_end,
    ) as process:
        out.close_write_end()
        err.close_write_end()
        count = 100_000
        try:
            flood = asyncio.create_task(server.broadcast(numbered(1, count)))
            last = f"Bob: {count:07d} ".encode()
            await wait_for_file(history, lambda data: last in data)
            await flood
            if sys.platform.startswith("linux"):
                assert peak_rss_kb(process.pid) < 40 * 1024
            # Now the pager scrolls: what it did not take is skipped, and it is told how much.
            shown = await out.read_until(rb"\*\*\* \d+ lines? not shown here")
            assert re.search(rb"\*\*\* \d+ lines? not shown here", shown)
        finally:
            code = await stop_with_signal(process, signal.SIGINT)
            out.close()
            err.close()
    assert code == -signal.SIGINT
    lines = read_history(history)
    assert numbers_of(chat_of(lines)) == list(range(1, count + 1))
    assert status_of(lines)[-1] == "*** stopped by SIGINT"


@pytest.mark.slow
@POSIX_ONLY
async def test_ctrl_c_works_while_stdout_is_blocked(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    out = UnreadPipe()
    async with reader_process(
        server,
        history,
        stdout=out.write_end,
        stderr=out.write_end,
    ) as process:
        out.close_write_end()
        try:
            await server.broadcast(numbered(1, 20_000))
            await wait_for_file(history, lambda data: b"Bob: 0020000 " in data)
        finally:
            started = time.monotonic()
            code = await stop_with_signal(process, signal.SIGTERM)
            out.close()
    assert code == -signal.SIGTERM
    assert time.monotonic() - started < STOP_WAIT
    assert status_of(read_history(history))[-1] == "*** stopped by SIGTERM"


# --- a long line stays one line ------------------------------------------------


@pytest.mark.parametrize(
    "size",
    sorted(
        {
            MAX_LINE_BYTES - 1,
            MAX_LINE_BYTES,
            MAX_LINE_BYTES + 1,
            READ_CHUNK_BYTES * 2 + 1,
            STREAM_LIMIT_BYTES - 1,
            STREAM_LIMIT_BYTES + 1,
            4 * 1024 * 1024,
        }
    ),
)
async def test_long_line_stays_one_line(server: FakeMinechatServer, tmp_path: Path, size: int) -> None:
    path = tmp_path / "chat.log"
    # Padded so that the forged text starts exactly at the size.
    line = b"Eve: " + "ж".encode() * ((size - 5) // 2) + b"y" * ((size - 5) % 2) + FORGED
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(line + b"\n" + FORGED + b" *** fake note\nBob: after\n")
        expected = [line.decode(), FORGED.decode() + " *** fake note", "Bob: after"]
        await wait_for_file(path, lambda data: b"Bob: after" in data)
        # stdout may skip what it could not take in time (a slow test stream), "Bob: after" too;
        # then it says so once it has caught up.
        text = await reader.out.wait_for(lambda text: text.endswith("Bob: after\n") or SKIPPED in text, FLOOD_WAIT)
    # Every line shown starts with a stamp, so none is forged; what it shows of a line is that line's start.
    complete = text.split("\n")[:-1]
    assert all(re.match(STAMP, entry) for entry in complete)
    shown = chat_of(complete)
    assert all(any(whole.startswith(part) for whole in expected) for part in shown)
    if SKIPPED not in text:
        assert shown == expected
    history = read_history(path)
    assert chat_of(history) == expected
    assert all(re.match(STAMP, entry) for entry in history)


@pytest.mark.slow
@LINUX_ONLY
@pytest.mark.parametrize(
    "unit",
    [b"z", b"\xff", b"\x00", "😀".encode()],
    ids=["ascii", "invalid-utf8", "nul", "four-byte"],
)
async def test_four_mib_line_keeps_memory_bounded(server: FakeMinechatServer, tmp_path: Path, unit: bytes) -> None:
    history = tmp_path / "chat.log"
    async with reader_process(
        server,
        history,
        stdout=subprocess.DEVNULL,
    ) as process:
        try:
            await wait_for_file(history, lambda data: b"*** connected" in data)
            before = peak_rss_kb(process.pid)
            # Escaped or replaced, some bytes grow several times as text: the bound must hold for them too.
            await server.broadcast(b"Eve: " + unit * (4 * 1024 * 1024 // len(unit)) + b"\nBob: after\n")
            await wait_for_file(history, lambda data: b"Bob: after" in data)
            grown = peak_rss_kb(process.pid) - before
        finally:
            await stop_with_signal(process, signal.SIGINT)
    # A NUL is written as the four characters \x00, so its pieces weigh four times as much as text.
    bound = 8 * 1024 if unit == b"\x00" else 6 * 1024
    assert grown < bound, f"grew by {grown} kB"


# --- small ones ------------------------------------------------------------------


async def test_closed_stdout_does_not_stop_the_history(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader(out=ClosedPipe())
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"A: one\n")
    await reader.out.wait_for_lines(1)
    await server.broadcast(b"A: two\n")
    await server.drop_readers()
    await reader.delays.wait_for_taken(1)
    await wait_for_file(reader.path, lambda data: b"A: two" in data)
    assert chat_of(read_history(reader.path)) == ["A: one", "A: two"]
    assert len(reader.out.lines) == 1  # after the broken pipe, no more printing is tried
    assert not reader.task.done()


async def test_a_long_line_is_cut_between_characters(server: FakeMinechatServer, tmp_path: Path) -> None:
    path = tmp_path / "chat.log"
    # The first cut falls inside the emoji unless it backs up over all three continuation bytes.
    line = "E: " + "a" * (MAX_LINE_BYTES - 4) + "😀" * 4 + "b" * MAX_LINE_BYTES
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(f"{line}\nBob: after\n".encode())
        await reader.out.wait_for_lines(2)
    assert chat_of(read_history(path)) == [line, "Bob: after"]


async def test_journal_pauses_the_connection_past_its_bound_and_resumes_once_taken() -> None:
    high = _minechat.recorder.QUEUE_HIGH_CHARS
    queue = _minechat.recorder.WriteQueue()
    calls: list[bool] = []
    queue.pause = calls.append
    text = "x" * high
    queue.add("a.log", text, text)  # shown as the very text written: counted once
    assert calls == []
    queue.add("a.log", "y", "y")
    queue.add("b.log", "z", "z")
    assert calls == [True]
    entries, shown = queue.take()
    assert entries == [("a.log", text + "y"), ("b.log", "z")] and shown == text + "yz"
    assert calls == [True, False]
    queue.add("a.log", text, text)  # counted afresh from nothing
    assert calls == [True, False]
    queue.take()
    half = high // 2
    queue.add("a.log", "t" * half, "s" * half)  # shown apart from the text: both count
    assert calls == [True, False]
    queue.add("a.log", "note")
    assert calls == [True, False, True]
    queue.take()
    queue.add("a.log", "note")
    queue.add("a.log", "")
    queue.add("b.log", "", "")
    assert queue.take() == ([("a.log", "note")], "")
    assert calls == [True, False, True, False] and queue.empty


@pytest.mark.parametrize(("skipped", "what"), [("y\n", "1 line"), ("y\nz\n", "2 lines")])
def test_echo_says_how_many_lines_stdout_missed_and_where_they_are(tmp_path: Path, skipped: str, what: str) -> None:
    out = BlockedOut()
    printer = _minechat.recorder.StdoutPrinter(out, lambda: tmp_path / "chat.log", fixed_clock())  # type: ignore[arg-type]
    assert printer._writer._thread.name == "stdout"
    printer.show("first\n")
    assert out.entered.wait(WAIT)
    printer.show(skipped + "x" * _minechat.output.OUTPUT_LIMIT_CHARS)
    out.gate.set()
    printer.close()
    printer._writer._thread.join(WAIT)
    assert out.text == (
        f"first\n{FIXED_STAMP} *** {what} not shown here (stdout was too slow); they are in {tmp_path / 'chat.log'}\n"
    )


def test_echo_failure_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def write(self, text: str) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    printer = _minechat.recorder.StdoutPrinter(Broken(), lambda: tmp_path / "chat.log", fixed_clock())  # type: ignore[arg-type]
    printer.show("a\n")
    printer._writer._thread.join(WAIT)
    assert [record.getMessage() for record in caplog.records] == [
        "cannot print chat any more (Broken pipe); still writing the history file"
    ]


@pytest.mark.slow
@POSIX_ONLY
async def test_stdout_skip_inside_a_long_line_forges_no_line(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    out = UnreadPipe()
    async with reader_process(
        server,
        history,
        stdout=out.write_end,
        stderr=subprocess.DEVNULL,
    ) as process:
        out.close_write_end()
        try:
            # Fill the pipe and the stdout queue while nobody reads stdout.
            await server.broadcast(numbered(1, 20_000))
            await wait_for_file(history, lambda data: b"Bob: 0020000 " in data)
            # Then in small batches, so that stdout's queue fills up to the brim.
            for first in range(20_001, 30_001, 10):
                await server.broadcast(numbered(first, 10))
                await asyncio.sleep(0.001)
            await wait_for_file(history, lambda data: b"Bob: 0030000 " in data)
            # The first 64 KiB piece of a long line is skipped on stdout; the rest waits in the client.
            head = b"Eve: "
            await server.broadcast(head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED_IN_LONG_LINE)
            await wait_for_file(history, lambda data: data.endswith(b"a" * 100))
            # The piece goes to stdout's queue right after the history write; there is nothing to wait on.
            await asyncio.sleep(0.5)
            # The pager scrolls on and catches up: the client says what it skipped.
            await out.read_until(rb"\*\*\* \d+ lines? not shown here[^\n]*\n")
            # The long line ends.
            await server.broadcast(b"\nBob: after\n")
            shown = await out.read_until(rb"Bob: after\n")
        finally:
            await stop_with_signal(process, signal.SIGINT)
            out.close()
    lines = read_history(history)
    assert chat_of(lines)[-2:] == [
        (head + b"a" * (MAX_LINE_BYTES - len(head)) + FORGED_IN_LONG_LINE).decode(),
        "Bob: after",
    ]
    # stdout: every line either starts with a stamp and is what the history holds, or is a note.
    printed = shown.decode(errors="replace").splitlines()  # the read may start inside a character
    assert FORGED_IN_LONG_LINE.decode() not in printed, "stdout shows a forged line"


@pytest.mark.slow
@POSIX_ONLY
async def test_ctrl_c_hammered_with_outputs_blocked(server: FakeMinechatServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.log"
    # A paused terminal: neither stdout nor stderr is read; -v keeps stderr's queue full.
    out, err = UnreadPipe(), UnreadPipe()
    async with reader_process(
        server,
        history,
        "-v",
        stdout=out.write_end,
        stderr=err.write_end,
    ) as process:
        out.close_write_end()
        err.close_write_end()
        try:
            await server.broadcast(numbered(1, 30_000))
            await wait_for_file(history, lambda data: b"Bob: 0030000 " in data)
            started = time.monotonic()
            # The user presses Ctrl-C, and again, and again, until the client is gone.
            while process.returncode is None and time.monotonic() - started < 2 * STOP_WAIT:
                send_signal(process, signal.SIGINT)
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.1)
            stopped_in_time = process.returncode is not None
            # The terminal resumes: what was stuck comes out, up to the end of stderr when the client is gone.
            shown = await err.read_until(rb"\Z-never", timeout=WAIT)
            code = await asyncio.wait_for(process.wait(), WAIT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            out.close()
            err.close()
    assert code == -signal.SIGINT
    assert b"Traceback" not in shown
    assert stopped_in_time
    assert status_of(read_history(history))[-1] == "*** stopped by SIGINT"
