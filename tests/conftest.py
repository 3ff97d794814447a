"""Fixtures shared by the tests: the fake server and a stdout that can be waited on."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer

from chat_io import backoff

WAIT = 5.0
# How long a client may take to stop after SIGINT/SIGTERM (the promise is within a second).
STOP_WAIT = 2.0
ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file modes")
CLIENT_VARIABLES = {
    "HOST", "READ_PORT", "SEND_PORT", "TOKEN", "TOKEN_PATH", "NICKNAME", "MESSAGE",
    "LOG_PATH", "VERBOSE", "CONNECT_TIMEOUT", "REPLY_TIMEOUT",
}  # fmt: skip
# Set when the tests themselves run under systemd: a client under test must not report to it.
SERVICE_VARIABLES = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


def client_env() -> dict[str, str]:
    """This environment without any of the clients' variables, for a client in a subprocess."""
    return {key: value for key, value in os.environ.items() if key not in CLIENT_VARIABLES | SERVICE_VARIABLES}


async def stop_with_signal(process: asyncio.subprocess.Process, signum: int) -> int:
    """Send a signal and return the exit code; a process that does not stop in time is killed."""
    process.send_signal(signum)
    try:
        return await asyncio.wait_for(process.wait(), STOP_WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


class RecordingOut:
    """A text stream that remembers what was written and lets a test wait for lines."""

    def __init__(self) -> None:
        self.text = ""
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.text += text
        self._changed.set()
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    async def wait_for_lines(self, count: int, timeout: float = WAIT) -> list[str]:
        async def wait() -> None:
            while len(self.lines) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.lines


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
def no_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep clients run in-process from notifying a service manager the tests may run under."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def server() -> AsyncIterator[FakeMinechatServer]:
    async with FakeMinechatServer() as running:
        yield running
