"""Fixtures shared by the tests: the fake server and a stdout that can be waited on."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer

from _minechat.output import SECRETS
from chat_io import backoff

WAIT = 5.0
# How long a client may take to stop after SIGINT/SIGTERM (the promise is within a second).
STOP_WAIT = 2.0
# How long a client may take to put a flood on disk, and how often a test looks at the file.
FILE_WAIT = 30.0
FILE_POLL_SECONDS = 0.01
ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file modes")
CLIENT_VARIABLES = {
    "HOST", "READ_PORT", "SEND_PORT", "TOKEN", "TOKEN_PATH", "NICKNAME", "MESSAGE",
    "LOG_PATH", "VERBOSE", "CONNECT_TIMEOUT", "REPLY_TIMEOUT", "TIME_FORMAT", "FORMAT", "BACKLOG",
    "IDLE_TIMEOUT",
}  # fmt: skip
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
    kept = {key: value for key, value in os.environ.items() if key not in dropped}
    return {**kept, **extra}


@pytest.fixture(autouse=True)
def no_client_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the caller's HOST, TOKEN, VERBOSE and the like away from clients run in-process."""
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def stop_with_signal(process: asyncio.subprocess.Process, signum: int) -> int:
    """Send a signal and return the exit code; a process that does not stop in time is killed."""
    process.send_signal(signum)
    try:
        return await asyncio.wait_for(process.wait(), STOP_WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


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


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo what a client's main() did to the root logger, whose stream the test's capture closes."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def restore_stop_signals() -> Iterator[None]:
    """Undo a client's main() ignoring the stop signals on its way out: children would inherit that, and keep it."""
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    saved = {signum: signal.getsignal(signum) for name in names if (signum := getattr(signal, name, None))}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture(autouse=True)
def restore_secrets() -> Iterator[None]:
    """Forget the secrets a test's sender made the global log filter hide (a token "x" would hide every x)."""
    known = set(SECRETS.secrets)
    yield
    SECRETS.secrets.clear()
    SECRETS.secrets.update(known)


@pytest.fixture(autouse=True)
def no_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep clients run in-process from notifying a service manager the tests may run under."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def server() -> AsyncIterator[FakeMinechatServer]:
    async with FakeMinechatServer() as running:
        yield running


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system of its own (tmpfs), to be filled up; only for root on Linux."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root on Linux")
    folder = tmp_path / "tiny"
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        # Lazily if a file is still open there (a failing test): a mount left behind breaks later runs' cleanup.
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)
