"""Fixtures shared by the tests: the fake server and a stdout that can be waited on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from fake_server import FakeMinechatServer

from chat_io import backoff

WAIT = 5.0


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


@pytest.fixture
async def server() -> AsyncIterator[FakeMinechatServer]:
    async with FakeMinechatServer() as running:
        yield running
