"""Stopping: catch SIGINT, SIGTERM and SIGHUP, cancel the work, wait for it; and run_cli, which both mains call."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, NoReturn, Protocol, TypeVar

from _minechat.output import configure_logging, flush_logging, make_output_safe
from chat_io import EXIT_INTERRUPTED, EXIT_SIGNAL_BASE, ChatError, exit_code_for

RECANCEL_SECONDS = 0.5


class SignalCatcher:
    """Within its block, SIGINT, SIGTERM and SIGHUP are caught and remembered instead of killing us."""

    # SIGHUP: the terminal was closed. Windows has none of it.
    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self.received: int | None = None
        self._arrived = asyncio.Event()
        self._installed: list[tuple[int, object]] = []  # each signal and the handler it had before

    def __enter__(self) -> SignalCatcher:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue  # ignored when we started (nohup, `cmd &`): it stays ignored
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                # Windows: Ctrl-C still arrives as KeyboardInterrupt, which main() maps.
                continue
            self._installed.append((signum, previous))
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
        for signum, previous in self._installed:
            loop.remove_signal_handler(signum)
            with suppress(OSError, TypeError, ValueError):  # TypeError: a handler not set from Python
                signal.signal(signum, previous)  # type: ignore[arg-type]

    async def wait(self) -> None:
        """Return once a signal has arrived."""
        await self._arrived.wait()

    @property
    def exit_code(self) -> int:
        """Return the conventional exit code for the signal that stopped us."""
        return EXIT_SIGNAL_BASE + (self.received or signal.SIGINT)


def stop_signal_of(code: int) -> int | None:
    """Return the stop signal an exit code stands for (128 + its number), or None."""
    signum = code - EXIT_SIGNAL_BASE
    return signum if signum in SignalCatcher.SIGNALS else None


def end_program(code: int) -> NoReturn:
    """End the process with an exit code; one that stands for a stop signal ends it by that signal.

    A shell script, timeout, xargs and supervisors tell a process killed by a signal from one that
    exited: a shell loop goes on after a child that exited 130, and stops after one killed by SIGINT.
    Python itself does the same for a KeyboardInterrupt nobody caught.
    """
    signum = stop_signal_of(code)
    if signum is not None and os.name == "posix":  # elsewhere a process cannot kill itself by a signal
        for stream in (sys.stdout, sys.stderr):  # the interpreter's own exit, which flushes them, never runs
            with suppress(AttributeError, OSError, ValueError):
                stream.flush()
        with suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)  # to this thread: it dies before the call returns
    sys.exit(code)


@contextmanager
def ctrl_c_raises() -> Iterator[None]:
    """Within the block, a Ctrl-C that would end the process raises KeyboardInterrupt instead.

    For a wait on the person at the terminal (a prompt), which can then end its line before we exit.
    """
    previous = signal.getsignal(signal.SIGINT)
    changed = False
    if previous not in (signal.SIG_IGN, signal.default_int_handler):  # the default, or the start-up's handler
        with suppress(ValueError):  # not the main thread: nothing to change
            signal.signal(signal.SIGINT, signal.default_int_handler)
            changed = True
    try:
        yield
    finally:
        if changed:
            signal.signal(signal.SIGINT, previous)


def ignore_stop_signals() -> None:
    """Let SIGINT, SIGTERM and SIGHUP do nothing from now on (we are on the way out)."""
    for signum in SignalCatcher.SIGNALS:
        with suppress(OSError, ValueError):  # ValueError: not the main thread
            signal.signal(signum, signal.SIG_IGN)


async def cancel_and_wait(task: asyncio.Future[Any]) -> BaseException | None:
    """Cancel a task, wait until it has really ended, and return what it raised (retrieved), if anything.

    A task that ended by itself before it could be cancelled may have raised: the caller decides
    whether that matters; asyncio does not log it as never retrieved either way. Cancelled itself
    meanwhile, it still waits for the task to end, then raises CancelledError.
    """
    cancelled = False
    while not task.done():
        # Before Python 3.12, asyncio.wait_for can swallow a cancellation that lands as its
        # inner call completes, so one cancel() is not always enough.
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
        except asyncio.CancelledError:
            # An outer cancel_and_wait cancels again, too: stopping here would leave the task
            # running with nobody left to cancel it. Its cancel is raised once the task has ended.
            cancelled = True
    failure = None if task.cancelled() else task.exception()  # retrieved, whatever comes next
    if cancelled:
        raise asyncio.CancelledError
    return failure


async def first_of(future: asyncio.Future[Any], other: Awaitable[object]) -> bool:
    """Wait until future is done or other has completed, whichever comes first; return whether future is done.

    other is then cancelled and waited for (what it raised is raised here); future is left as it is.
    """
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({future, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failure = await cancel_and_wait(waiter)
    if failure is not None:
        raise failure
    return future.done()


async def run_until_signal(work: Coroutine[object, object, object], signals: SignalCatcher) -> int | None:
    """Run work to its end, or cancel it when a signal arrives; return the signal number, or None."""
    task = asyncio.ensure_future(work)
    try:
        await first_of(task, signals.wait())
    finally:
        await cancel_and_wait(task)
    if signals.received is not None:
        return signals.received
    task.result()  # raises what the work raised
    return None


class Verbosity(Protocol):
    """Settings that say how much to log."""

    @property
    def verbose(self) -> bool: ...

    @property
    def quiet(self) -> bool: ...


SettingsT = TypeVar("SettingsT", bound=Verbosity)


def run_cli(
    parse: Callable[[], SettingsT],
    run: Callable[[SettingsT], Coroutine[object, object, int]],
    logger: logging.Logger,
    secrets: Collection[str] = frozenset(),
) -> int:
    """Parse the settings, run the client on one event loop, and map every way it ends to an exit code.

    Log records never show any of secrets, a collection the client may add to as it learns them.
    """
    make_output_safe(sys.stdout)
    make_output_safe(sys.stderr)
    configure_logging(verbose=False, secrets=secrets)  # for warnings about .env while the settings are read
    try:
        settings = parse()
        # From a thread: a stderr nobody reads must not freeze the client, nor Ctrl-C.
        configure_logging(settings.verbose, background=True, secrets=secrets, quiet=settings.quiet)
        return asyncio.run(run(settings))
    except ChatError as error:
        logger.error("%s", error)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        # We are on the way out: another Ctrl-C must not break off the last writes with a traceback.
        ignore_stop_signals()
        flush_logging()
