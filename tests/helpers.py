"""Plain helpers the tests share: constants, fakes, and the ways to run the clients."""

from __future__ import annotations

import asyncio
import builtins
import functools
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from fake_server import FakeMinechatServer

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
import read_client
import send_client
from _minechat.history import HISTORY_FORMATS, HistoryFile, HistoryPattern
from _minechat.sender_settings import SenderSettings
from _minechat.stamping import DEFAULT_TIME_FORMAT, StampClock, format_stamp, stamp_following_lines
from _minechat.view import Mark
from chat_io import STATUS_MARK, DelayFactory, backoff
from read_client import ReaderSettings

# --- where the clients are, how long to wait, on which platforms -----------------------------------------


ROOT = Path(__file__).resolve().parent.parent


WAIT = 5.0


# How long a client process may take to start and connect: Python's start-up on a machine busy with other work.
START_WAIT = 30.0


# How long a client may take to exit after SIGINT/SIGTERM. The promise is within a second; this is the
# bound a busy machine (other test runs, two `yes` loops on two cores) still keeps, not the promise.
STOP_WAIT = 15.0


# How long a client may take to put a flood on disk, and how often a test looks at the file.
FILE_WAIT = 30.0


FILE_POLL_SECONDS = 0.01


FLOOD_WAIT = 30.0


# How long a client process run to its end may take: start-up, a few connections, a few tries (below pytest's 30 s).
RUN_WAIT = 20.0


POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file modes")


LINUX_ONLY = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux only: its socket options, pipes, /proc and names"
)


SYMLINKS = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")


# --- the clients as processes: the one way to start them -------------------------------------------------


CLIENT_VARIABLES = {
    "HOST", "READ_PORT", "SEND_PORT", "TOKEN", "TOKEN_PATH", "NICKNAME", "MESSAGE",
    "LOG_PATH", "VERBOSE", "CONNECT_TIMEOUT", "REPLY_TIMEOUT", "TIME_FORMAT", "FORMAT", "BACKLOG",
    "IDLE_TIMEOUT", "IGNORE", "HIGHLIGHT", "COMPRESS", "KEEP_DAYS",
}  # fmt: skip


# What the clients' variables are named by in the environment (MINECHAT_HOST); the bare names above
# are not read there, yet dropped all the same.
CLIENT_PREFIX = "MINECHAT_"


# Set when the tests themselves run under systemd: a client under test must not report to it.
SERVICE_VARIABLES = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


# Variables of the caller that would change what a client in a subprocess does, beyond its own:
# PYTHONUNBUFFERED would hide a missing flush of stdout, TZ is set on purpose where stamps are checked.
CALLER_VARIABLES = {"PYTHONUNBUFFERED", "TZ"}


# Under mutmut, a client in a subprocess inherits the mutant under test, so it runs that mutant (of
# chat_io: a script run as __main__ keeps its own code). While mutmut only records which tests reach
# which functions ("stats"), a subprocess cannot report and would look for mutmut's settings in its
# own folder, and fail: it runs unmutated instead.
MUTMUT_VARIABLE = "MUTANT_UNDER_TEST"


MUTMUT_STATS = "stats"


def client_env(**extra: str) -> dict[str, str]:
    """This environment without the clients' variables and the caller's quirks, plus extra, for a subprocess."""
    dropped = CLIENT_VARIABLES | CALLER_VARIABLES | SERVICE_VARIABLES
    if os.environ.get(MUTMUT_VARIABLE) == MUTMUT_STATS:
        dropped |= {MUTMUT_VARIABLE}
    kept = {key: value for key, value in os.environ.items() if key not in dropped and not key.startswith(CLIENT_PREFIX)}
    return {**kept, **extra}


# The signals a client must find at their defaults, whatever the tests were started with: under
# nohup (SIGHUP ignored) or `trap "" INT` the child would inherit the ignored ones.
DEFAULT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def default_signals(ignored: tuple[int, ...] = ()) -> None:
    """Put SIGINT, SIGTERM and SIGHUP back to their defaults, but ignore those in ignored (in a child)."""
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    for signum in ignored:
        signal.signal(signum, signal.SIG_IGN)


def client_command(
    script: str, *argv: str | bytes, port: int | None = None, shell: str = "", python: tuple[str, ...] = ()
) -> list[str | bytes]:
    """The command line of a client script in this checkout, aimed at 127.0.0.1:port if given.

    With shell, the command runs as "$@" in that sh script (for a ulimit, or a closed stdin); python
    holds the interpreter's own arguments, before the script's path.
    """
    address = ["--host", "127.0.0.1", "--port", str(port)] if port is not None else []
    command: list[str | bytes] = [sys.executable, *python, str(ROOT / script), *address, *argv]
    return ["sh", "-c", shell, "sh", *command] if shell else command


def spawn_options(cwd: Path, env: dict[str, str] | None, ignored: tuple[int, ...] = ()) -> dict[str, Any]:
    """What every client process gets: its folder, a clean environment and default signal dispositions.

    The signals in ignored start out ignored, as under nohup.
    """
    options: dict[str, Any] = {"cwd": cwd, "env": client_env() if env is None else env}
    if os.name == "posix":
        options["preexec_fn"] = functools.partial(default_signals, ignored) if ignored else default_signals
    return options


async def start_client(
    script: str,
    *argv: str | bytes,
    cwd: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.PIPE,
    stderr: Any = subprocess.PIPE,
    shell: str = "",
    python: tuple[str, ...] = (),
    ignored: tuple[int, ...] = (),
) -> asyncio.subprocess.Process:
    """Start read_client.py or send_client.py as a process: the one way the tests do it.

    Rather use client_process or reader_process, which also reap it. python holds options (or a -c
    program) for the interpreter before the script; ignored, signals the client starts with ignored.
    """
    return await asyncio.create_subprocess_exec(
        *client_command(script, *argv, port=port, shell=shell, python=python),
        stdin=stdin, stdout=stdout, stderr=stderr, **spawn_options(cwd, env, ignored),
    )  # fmt: skip


async def reap(process: asyncio.subprocess.Process) -> None:
    """Kill a client process that is still running, and wait for it: no test leaves one behind."""
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@asynccontextmanager
async def client_process(script: str, *argv: str | bytes, **options: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """A client started as a process (start_client's arguments); killed and reaped at the end if still running."""
    process = await start_client(script, *argv, **options)
    try:
        yield process
    finally:
        await reap(process)


@asynccontextmanager
async def reader_process(
    server: FakeMinechatServer,
    history: Path,
    *argv: str | bytes,
    cwd: Path | None = None,
    port: int | None = None,
    **options: Any,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """read_client.py as a process writing history, yielded once it has joined the fake chat; reaped at the end.

    It runs in history's folder unless cwd is given; a reader that exits before it has connected fails the
    test with its exit code and stderr.
    """
    joined = server.readers_joined
    port = port or server.read_port
    argv = ("--log_path", str(history), *argv)
    async with client_process("read_client.py", *argv, port=port, cwd=cwd or history.parent, **options) as process:
        await wait_until_joined(server, process, joined + 1)
        yield process


async def wait_until_joined(
    server: FakeMinechatServer, process: asyncio.subprocess.Process, count: int, timeout: float = START_WAIT
) -> None:
    """Wait until the server has had count readers join, or fail if the process exits first or time runs out."""
    joining = asyncio.ensure_future(server.wait_until(lambda: server.readers_joined >= count, timeout))
    ending = asyncio.ensure_future(process.wait())
    try:
        await asyncio.wait({joining, ending}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (joining, ending):
            task.cancel()
        await asyncio.gather(joining, ending, return_exceptions=True)
    if server.readers_joined >= count:
        return
    if process.returncode is not None:
        err = await process.stderr.read() if process.stderr is not None else b""
        raise AssertionError(f"the reader exited with {process.returncode} before it connected: {err.decode()}")
    raise AssertionError(f"the reader had not connected after {timeout} s")


@contextmanager
def client_process_sync(
    script: str,
    *argv: str | bytes,
    cwd: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    python: tuple[str, ...] = (),
    **streams: Any,
) -> Iterator[subprocess.Popen[Any]]:
    """client_process for a test without an event loop."""
    streams.setdefault("stdin", subprocess.DEVNULL)
    command = client_command(script, *argv, port=port, python=python)
    with subprocess.Popen(command, **spawn_options(cwd, env), **streams) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_client_sync(
    script: str,
    *argv: str | bytes,
    cwd: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = START_WAIT,
    python: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run a client as a process to its end (killed after timeout); return what it did, as text."""
    return subprocess.run(
        client_command(script, *argv, port=port, python=python), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, **spawn_options(cwd or ROOT, env),
    )  # fmt: skip


# A refused value ends a reader at once; one that is taken makes it retry port 9 forever.
REFUSAL_WAIT = 10.0


def run_reader(tmp_path: Path, *argv: str | bytes, **env: str) -> subprocess.CompletedProcess[str]:
    """Run read_client.py in tmp_path against a port nobody listens on; fail if it does not stop by itself."""
    try:
        return run_client_sync(
            "read_client.py", *argv, cwd=tmp_path, port=9, env=client_env(**env), timeout=REFUSAL_WAIT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"read_client took {argv or env} and ran")


def send_signal(process: asyncio.subprocess.Process, signum: int) -> None:
    """Signal a client process unless it has been seen to exit.

    Not Process.send_signal(): it polls first, and a poll that reaps a client which has just exited
    takes its exit status from asyncio's child watcher, which then reports 255.
    """
    if process.returncode is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signum)


async def stop_with_signal(process: asyncio.subprocess.Process, signum: int, timeout: float = STOP_WAIT) -> int:
    """Send a signal and return the exit code; a process that does not stop within timeout is killed (-9)."""
    send_signal(process, signum)
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def finish(process: asyncio.subprocess.Process, timeout: float = START_WAIT) -> tuple[int, str]:
    """Wait for a process to start and exit on its own; return its exit code and stderr."""
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, err.decode(errors="replace") if err else ""


async def wait_for_file(path: Path, predicate: Callable[[bytes], bool], timeout: float = FILE_WAIT) -> bytes:
    """Poll a file the client writes until its content satisfies predicate; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never got there; it has {len(data)} bytes: {data[-200:]!r}")
        await asyncio.sleep(FILE_POLL_SECONDS)


LOG_POLL_SECONDS = 0.01


async def wait_for_log(caplog: pytest.LogCaptureFixture, predicate: Callable[[str], bool]) -> None:
    """Wait until a logged message satisfies predicate."""

    async def wait() -> None:
        while not any(predicate(record.getMessage()) for record in caplog.records):
            await asyncio.sleep(LOG_POLL_SECONDS)

    await asyncio.wait_for(wait(), WAIT)


async def wait_for_state(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait until an object the test holds gets into a state, polled; fail after timeout."""

    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(LOG_POLL_SECONDS)

    await asyncio.wait_for(wait(), timeout)


# --- fakes that record what they were given --------------------------------------------------------------


async def wait_for_path_gone(path: Path, timeout: float = FILE_WAIT) -> None:
    """Poll until the client has removed path; fail after timeout."""
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} is still there after {timeout} s")
        await asyncio.sleep(FILE_POLL_SECONDS)


class RecordingOut:
    """A text stream that remembers what was written and lets a test wait for lines.

    Writes may come from another thread (the client prints from one), so the event that wakes
    waiting tests is set through the loop.
    """

    def __init__(self) -> None:
        self.text = ""
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def write(self, text: str) -> int:
        self.text += text
        if self._loop.is_closed():
            return len(text)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._changed.set()
        else:
            self._loop.call_soon_threadsafe(self._changed.set)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    async def wait_for_lines(self, count: int, timeout: float = WAIT) -> list[str]:
        await self.wait_for(lambda text: len(text.splitlines()) >= count, timeout)
        return self.lines

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
        """Wait until what was written satisfies predicate; return it."""

        async def wait() -> None:
            while not predicate(self.text):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.text


class FakeTime:
    """A clock the test moves by hand."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class RecordingDelays:
    """A backoff factory with tiny delays that counts resets and delays taken."""

    def __init__(self, initial: float = 0.002, cap: float = 0.05) -> None:
        self.initial = initial
        self.cap = cap
        self.resets = 0
        self.taken: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self) -> Iterator[float]:
        self.resets += 1
        return self._generate()

    def _generate(self) -> Iterator[float]:
        for delay in backoff(initial=self.initial, cap=self.cap, jitter=0):
            self.taken.append(delay)
            self._changed.set()
            yield delay

    async def wait_for_taken(self, count: int, timeout: float = WAIT) -> None:
        async def wait() -> None:
            while len(self.taken) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


class StdinPipe:
    """A real pipe standing in for stdin, written by the test as it goes."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()
        self.reader = os.fdopen(read_end, "rb", buffering=0)

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_end, view) :]

    def end(self) -> None:
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1

    def close(self) -> None:
        self.end()
        self.reader.close()


class StdinBytes:
    """A stdin with no descriptor: the bytes given, then its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


# --- the reader: its history, and the reader in-process --------------------------------------------------


STAMP = r"\[\d\d\.\d\d\.\d\d \d\d:\d\d\] "


STAMP_TEXT = "[27.11.26 09:05]"


WHEN = datetime(2026, 11, 27, 9, 5)


ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


ISO_UTC = "2026-11-27T10:00:00+00:00"


# A fixed moment and the stamp DEFAULT_TIME_FORMAT gives it in local time.
FIXED_TIME = datetime(2026, 3, 4, 5, 6, 7).timestamp()


FIXED_STAMP = "[04.03.26 05:06]"


# A POSIX TZ rule that needs no time zone database: UTC+13:37, which no caller's zone is.
ODD_ZONE = "ODD-13:37"


ODD_OFFSET = timedelta(hours=13, minutes=37)


# Bidi embeddings, overrides and isolates, and the marks: each can reorder what a terminal shows.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


EMOJI = "😀"  # four bytes in UTF-8


FORGED_IN_LONG_LINE = b"[01.01.25 00:00] Admin: the server moves, log in at evil.example"


def read_history(path: Path) -> list[str]:
    """Return the history file's lines."""
    return path.read_text(encoding="utf-8").splitlines()


def chat_of(lines: list[str]) -> list[str]:
    """Strip stamps and drop the status lines."""
    texts = [re.sub("^" + STAMP, "", line) for line in lines]
    return [text for text in texts if not text.startswith("*** ")]


def status_of(lines: list[str]) -> list[str]:
    """Return only the status lines, without stamps."""
    texts = [re.sub("^" + STAMP, "", line) for line in lines]
    return [text for text in texts if text.startswith("*** ")]


def note(count: int) -> str:
    return f"*** {count} skipped\n"


def numbered(first: int, count: int, pad: str = "ну и погода сегодня") -> bytes:
    """Return chat lines carrying their numbers, so gaps and doubles show."""
    return "".join(f"Bob: {number:07d} {pad}\n" for number in range(first, first + count)).encode()


def fill_disk(folder: Path) -> Path:
    """Fill a file system with one file until not a byte more fits; return that file."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with suppress(OSError):
            while os.write(descriptor, b"\0" * 512):
                pass
    finally:
        os.close(descriptor)
    return filler


def numbers_of(chat: list[str]) -> list[int]:
    """Return the line numbers of numbered chat lines, in file order."""
    return [int(line.split()[1]) for line in chat if re.fullmatch(r"Bob: \d{7} .*", line)]


@dataclass
class Reader:
    """A read_client running in-process and what it writes."""

    task: asyncio.Task[int]
    out: RecordingOut
    settings: ReaderSettings
    delays: RecordingDelays

    @property
    def path(self) -> Path:
        return self.settings.log_path


StartReader = Callable[..., Awaitable[Reader]]


async def stop(reader: Reader) -> None:
    """Stop a reader as a signal would (the journal goes to disk first)."""
    reader.task.cancel()
    with suppress(asyncio.CancelledError):
        await reader.task


def reader_settings(server: FakeMinechatServer, path: Path, **options: Any) -> ReaderSettings:
    """Reader settings aimed at the fake server's chat, writing path; options replace any other setting."""
    given: dict[str, Any] = {"host": "127.0.0.1", "port": server.read_port, "connect_timeout": WAIT, "verbose": False}
    return ReaderSettings(log_path=path, **(given | options))


def start_reader_task(
    settings: ReaderSettings,
    out: RecordingOut | None = None,
    now: Callable[[], float] = time.time,
    mark: Mark | None = None,
) -> Reader:
    """Start read_client.run in-process, with tiny backoff delays; stop() ends it. mark: stdout is a terminal's."""
    out = out or RecordingOut()
    delays = RecordingDelays()
    return Reader(asyncio.create_task(read_client.run(settings, out, delays, now, mark)), out, settings, delays)


@asynccontextmanager
async def running_reader(
    server: FakeMinechatServer, path: Path, out: RecordingOut | None = None, **options: Any
) -> AsyncIterator[Reader]:
    """Run read_client in-process against the fake server (reader_settings' options); stopped at the end."""
    reader = start_reader_task(reader_settings(server, path, **options), out)
    try:
        yield reader
    finally:
        await stop(reader)


def read_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run read_client.main in-process; return the exit code and stderr."""
    try:
        code = read_client.main(argv)
    except SystemExit as stop:
        code = stop.code  # type: ignore[assignment]
    return code, capsys.readouterr().err


def query_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run read_client.main in-process in a query mode; return the exit code, stdout and stderr."""
    capsys.readouterr()  # what earlier steps printed is not this run's
    code = read_client.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fixed_clock(pattern: _minechat.history.HistoryPattern | None = None) -> StampClock:
    """Return the clock run() would build for a pattern, stopped at FIXED_TIME."""
    expand = pattern.expand if pattern is not None else (lambda when: "")
    return StampClock(DEFAULT_TIME_FORMAT, expand, FakeTime(FIXED_TIME))


def make_history(path: Path, clock: StampClock | None = None) -> _minechat.history.HistoryFile:
    """Return a text history file for path (a pattern), as run() builds it, not yet open; clock: fixed_clock's."""
    pattern = _minechat.history.HistoryPattern(path)
    clock = clock or fixed_clock(pattern)
    return _minechat.history.HistoryFile(pattern, _minechat.history.HISTORY_FORMATS["text"], clock)


def open_history(path: Path) -> _minechat.history.HistoryFile:
    """Return a text history file for path, open and locked."""
    history = make_history(path)
    history.open(str(path))
    return history


# --- the sender ------------------------------------------------------------------------------------------


TOKEN = "5210a154-74ca-11e9-9d4f-0242ac110002"


ACCOUNT = f'{{"nickname": "Focused Loyd", "account_hash": "{TOKEN}"}}\n'.encode()


def settings_at(port: int, tmp_path: Path, *argv: str) -> SenderSettings:
    """Parse send_client settings aimed at 127.0.0.1:port, the token file in tmp_path, with no outside environment."""
    base = ["--host", "127.0.0.1", "--port", str(port), "--token_path", str(tmp_path / "token.txt")]
    return send_client.parse_settings([*base, *argv], {}, tmp_path)


def settings_for(server: FakeMinechatServer, tmp_path: Path, *argv: str, watch: bool = False) -> SenderSettings:
    """Parse send_client settings aimed at the fake server; with watch, the sender watches its chat for our posts."""
    watching = ("--read-port", str(server.read_port)) if watch else ()
    return settings_at(server.write_port, tmp_path, *watching, *argv)


async def run_sender(settings: SenderSettings, stdin: bytes = b"") -> send_client.Sender:
    """Run the sender in-process with tiny retry delays; fail if it does not end within a bound."""
    return await asyncio.wait_for(send_to_end(settings, io.BytesIO(stdin), RecordingDelays()), RUN_WAIT)


async def send_to_end(
    settings: SenderSettings, stdin: BinaryIO | None, make_delays: DelayFactory | None = None
) -> send_client.Sender:
    """Run a sender in-process until it is done, as send_client.run does without its signals; return it."""
    sender = send_client.make_sender(settings, stdin, make_delays or RecordingDelays())
    await sender.run()
    return sender


@asynccontextmanager
async def streaming_sender(
    settings: SenderSettings, delays: DelayFactory | None = None
) -> AsyncIterator[tuple[StdinPipe, send_client.Sender, asyncio.Future[None]]]:
    """Run a sender in-process on a stdin pipe the test writes to; cancel it and close the pipe at the end."""
    stdin = StdinPipe()
    sender = send_client.make_sender(settings, stdin.reader, delays or RecordingDelays())
    task = asyncio.ensure_future(sender.run())
    try:
        yield stdin, sender, task
    finally:
        task.cancel()
        stdin.close()


def texts_of(server: FakeMinechatServer, acknowledged_only: bool = False) -> list[str]:
    """Return the one-line posts the server took, in order."""
    return [" | ".join(post.lines) for post in server.posts if post.acknowledged or not acknowledged_only]


def free_port() -> int:
    """Return a port on 127.0.0.1 that nobody listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[int]:
    """A posting server that follows a script of the test's own; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def run_sender_process(
    port: int, cwd: Path, *argv: str, stdin: bytes | None = b"", timeout: float = RUN_WAIT, shell_prefix: str = ""
) -> tuple[int, str, str]:
    """Run send_client.py to its end against a posting port; return its exit code, stdout and stderr.

    stdin is written to it (None: it reads /dev/null); shell_prefix runs before it in sh (a ulimit).
    """
    shell = f'{shell_prefix} exec "$@"' if shell_prefix else ""
    stream = subprocess.DEVNULL if stdin is None else subprocess.PIPE
    async with client_process("send_client.py", *argv, port=port, cwd=cwd, stdin=stream, shell=shell) as process:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def run_main_in_thread(
    main: Callable[[list[str] | None], int], argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Run a client's main in-process, in cwd (in a thread, as it runs its own event loop); return its exit code."""
    monkeypatch.chdir(cwd)

    def call() -> int:
        try:
            return main(argv)
        except SystemExit as stop:  # a usage error, through argparse
            assert isinstance(stop.code, int)
            return stop.code

    return await asyncio.wait_for(asyncio.to_thread(call), RUN_WAIT)


async def run_send_main(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run send_client.main in-process; return its exit code."""
    return await run_main_in_thread(send_client.main, argv, cwd, monkeypatch)


async def run_read_main(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run read_client.main in-process; return its exit code."""
    return await run_main_in_thread(read_client.main, argv, cwd, monkeypatch)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line]


# --- systemd ---------------------------------------------------------------------------------------------


# AF_UNIX paths are short: 104 bytes on macOS, 108 on Linux.
MAX_SOCKET_PATH = 100


def received(sock: socket.socket) -> list[bytes]:
    """Return every datagram waiting on a non-blocking socket."""
    messages = []
    with suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(65536))
    return messages


class Listener:
    """Collects datagrams from a notify socket, each with the time it arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[tuple[float, str]] = []
        self._changed = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            self.messages.append((time.monotonic(), data.decode()))
            self._changed.set()

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.messages]

    async def wait_until(self, predicate: Callable[[list[str]], bool], timeout: float = WAIT) -> list[str]:
        async def wait() -> None:
            while not predicate(self.texts):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.texts


UNIT = ROOT / "contrib" / "minechat-read.service"


# --- oracles: the history's text, line by line, as the stampers must give it ------------------


def format_history_line(text: str, when: datetime) -> str:
    """Return one history line: stamp, space, text, newline."""
    return f"{format_stamp(when)} {text}\n"


def format_status_line(text: str, when: datetime) -> str:
    """Return a history line that marks a connection event, not chat."""
    return format_history_line(f"{STATUS_MARK} {text}", when)


def format_history_block(block: bytes, when: datetime) -> str:
    """Stamp every line of a block of complete received lines, as the text stamper does."""
    if not block:
        return ""
    prefix = format_stamp(when) + " "
    return prefix + stamp_following_lines(block, prefix)


def open_text_history(pattern: Path, now: FakeTime | None = None) -> tuple[HistoryFile, StampClock]:
    """Return an open text history for a pattern, and its clock."""
    history_pattern = HistoryPattern(pattern)
    clock = StampClock(expand_path=history_pattern.expand, now=now or FakeTime(datetime(2026, 11, 27).timestamp()))
    history = HistoryFile(history_pattern, HISTORY_FORMATS["text"], clock)
    history.open(clock.read().path)
    return history, clock


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make opening any file called name fail as for a file mode 000, which root could read all the same."""
    real_open = builtins.open

    def refuse(file: Any, *args: Any, **kwargs: Any) -> Any:
        if os.path.basename(os.fspath(file)) == name:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
