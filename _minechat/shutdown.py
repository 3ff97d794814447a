"""Stopping on a signal: catch SIGINT, SIGTERM and SIGHUP, cancel the work, wait for it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from contextlib import suppress
from types import TracebackType

from chat_io import EXIT_SIGNAL_BASE

RECANCEL_SECONDS = 0.5


class SignalCatcher:
    """Within its block, SIGINT, SIGTERM and SIGHUP are caught and remembered instead of killing us."""

    # SIGHUP: the terminal was closed. Windows has none of it.
    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self.received: int | None = None
        self._arrived = asyncio.Event()
        self._installed: list[int] = []

    def __enter__(self) -> SignalCatcher:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                # Windows: Ctrl-C still arrives as KeyboardInterrupt, which main() maps.
                continue
            self._installed.append(signum)
        return self

    def _on_signal(self, signum: int) -> None:
        if self.received is None:
            self.received = signum
        self._arrived.set()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)

    async def wait(self) -> None:
        """Return once a signal has arrived."""
        await self._arrived.wait()

    @property
    def exit_code(self) -> int:
        """Return the conventional exit code for the signal that stopped us."""
        return EXIT_SIGNAL_BASE + (self.received or signal.SIGINT)


def ignore_stop_signals() -> None:
    """Let SIGINT, SIGTERM and SIGHUP do nothing from now on."""
    for signum in SignalCatcher.SIGNALS:
        with suppress(OSError, ValueError):  # ValueError: not the main thread
            signal.signal(signum, signal.SIG_IGN)


async def cancel_and_wait(task: asyncio.Future[object]) -> None:
    """Cancel a task and wait until it has really ended."""
    while not task.done():
        # Before Python 3.12, asyncio.wait_for can swallow a cancellation that lands as its
        # inner call completes, so one cancel() is not always enough.
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)


async def run_until_signal(work: Coroutine[object, object, object], signals: SignalCatcher) -> int | None:
    """Run work to its end, or cancel it when a signal arrives; return the signal number, or None."""
    task = asyncio.ensure_future(work)
    signalled = asyncio.ensure_future(signals.wait())
    try:
        await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
        await cancel_and_wait(task)
    if signals.received is not None:
        return signals.received
    task.result()  # raises what the work raised
    return None
