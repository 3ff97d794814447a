"""The reader's write side: the queue of what was received, its writer to disk through a full disk, and stdout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from _minechat.history import DiskFull, HistoryFile, HistoryFormat, format_status
from _minechat.output import BackgroundWriter
from _minechat.shutdown import cancel_and_wait
from _minechat.stamping import Moment, StampClock
from _minechat.systemd import ServiceNotifier
from chat_io import describe_error, plural, within

logger = logging.getLogger("read_client")

# What the queue may hold before we stop reading the socket until the writer has taken it.
QUEUE_HIGH_CHARS = 64 * 1024
# How long a stop waits for the history to take what is queued: a hung disk must not keep us running.
HISTORY_CLOSE_SECONDS = 1.0
# How often the writer tries again while the disk is full.
DISK_RETRY_SECONDS = 1.0
NO_ROOM_NOTE = "the disk is full"


class StdoutPrinter:
    """Prints received chat from a thread: the history never waits for stdout, and stdout memory is bounded."""

    def __init__(self, out: TextIO, history_path: Callable[[], Path], clock: StampClock) -> None:
        def write(text: str) -> None:
            out.write(text)
            out.flush()

        def skip_note(count: int) -> str:
            what = f"{plural(count, 'line')} not shown here (stdout was too slow)"
            return format_status(clock.fresh(), f"{what}; they are in {history_path()}")

        def on_failure(error: BaseException) -> None:
            logger.warning("cannot print chat any more (%s); still writing the history file", describe_error(error))

        self._writer = BackgroundWriter(write, skip_note, name="stdout", on_failure=on_failure)

    def show(self, text: str) -> None:
        """Queue text for stdout; never waits."""
        self._writer.put(text)

    def close(self) -> None:
        """Print what is queued if stdout takes it within a second, then stop."""
        self._writer.close()


class WriteQueue:
    """Text received but not yet on disk, in order, each with its file; asks to pause while it holds too much."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, list[str]]] = []  # (history file, its texts), in order
        self._shown: list[str] = []  # what goes to stdout: chat, not notes
        self._size = 0
        self._ready = asyncio.Event()
        self._paused = False
        self._stalled = False  # the writer cannot write: stop reading whatever the size
        self.pause: Callable[[bool], None] | None = None  # the current connection's

    def add(self, path: str, text: str, shown: str = "") -> None:
        """Queue text for the history file at path, and shown for stdout."""
        if text:
            if self._entries and self._entries[-1][0] == path:
                self._entries[-1][1].append(text)
            else:
                self._entries.append((path, [text]))
            self._size += len(text)
        if shown:
            self._shown.append(shown)
            if shown is not text:
                self._size += len(shown)
        if not (text or shown):
            return
        self._ready.set()
        if self._size > QUEUE_HIGH_CHARS and not self._paused:
            self._set_paused(True)

    def take(self) -> tuple[list[tuple[str, str]], str]:
        """Return everything queued, as (history file, text) entries and text for stdout, and forget it."""
        entries = [(path, "".join(texts)) for path, texts in self._entries]
        shown = "".join(self._shown)
        self._entries.clear()
        self._shown.clear()
        self._size = 0
        self._ready.clear()
        if self._paused and not self._stalled:
            self._set_paused(False)
        return entries, shown

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self.pause is not None:
            self.pause(paused)

    def attach(self, pause: Callable[[bool], None] | None) -> None:
        """Take a new connection's pause (None: no connection); it starts paused if we are."""
        self.pause = pause
        if pause is not None and self._paused:
            pause(True)

    def stall(self, stalled: bool) -> None:
        """Stop reading the socket while the writer cannot write (a full disk), or go on once it can."""
        self._stalled = stalled
        if stalled != self._paused:
            self._set_paused(stalled)

    @property
    def paused(self) -> bool:
        """Tell whether we asked the connection to stop reading (so its silence is ours)."""
        return self._paused

    @property
    def empty(self) -> bool:
        """Tell whether nothing is queued."""
        return not self._entries and not self._shown

    async def wait(self) -> None:
        """Return once there is something to take."""
        await self._ready.wait()

    def wake(self) -> None:
        """Wake a waiting writer even with nothing queued."""
        self._ready.set()


class Recorder:
    """Writes the queue to the history file, then to stdout; nothing taken from the queue is dropped.

    A full disk is a pause: the socket is not read, the rest is tried every second, and once it is
    written the history gets a note of how long the disk was full.
    """

    def __init__(
        self,
        history: HistoryFile,
        printer: StdoutPrinter,
        clock: StampClock,
        service: ServiceNotifier,
        history_format: HistoryFormat,
    ) -> None:
        self.queue = WriteQueue()
        self._history = history
        self._printer = printer
        self._clock = clock
        self._service = service
        self._format = history_format
        self._closing = False
        self._given_up = False  # stopped on a full disk: what comes now is shown, not written
        self._full_disk = True  # what stopped the last stall: no room, or a file that cannot be had
        self._woken = asyncio.Event()  # closing: stop waiting for room
        import aiofiles.os  # here, not at the top: it costs a --help more than all our own modules

        self._executor = DaemonExecutor("history")
        self._write_in_thread = aiofiles.os.wrap(history.write)  # one thread hop per batch
        self._writing = False  # a write is in the worker's hands
        self._writes_done = 0  # writes that returned, written or not
        self._writes_seen = 0  # _writes_done when progressing() last looked
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._write_forever())

    async def _write_forever(self) -> None:
        while True:
            await self.queue.wait()
            entries, shown = self.queue.take()
            if entries and not self._given_up:
                await self._write_through_full_disk(entries)
            if shown:
                self._printer.show(shown)
            if self._closing and self.queue.empty:
                return

    async def _write_through_full_disk(self, entries: list[tuple[str, str]]) -> None:
        """Write entries; while the disk is full, hold the socket and try again every second."""
        full_since = None
        while True:
            try:
                await self._write(entries)
            except DiskFull as full:
                entries = full.unwritten
                stopped = full
            else:
                break
            if full_since is None:
                full_since = self._clock.fresh()
                self._report_full(stopped)
            if self._closing:
                self._give_up()
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await within(DISK_RETRY_SECONDS, self._woken.wait())
        if full_since is not None:
            self._report_room(full_since)

    async def _write(self, entries: list[tuple[str, str]]) -> None:
        self._writing = True
        try:
            await self._write_in_thread(entries, executor=self._executor)
        finally:
            self._writing = False
            self._writes_done += 1

    def progressing(self) -> bool:
        """Tell whether the writer has nothing in hand or finished a write since the last look (for the watchdog)."""
        done, self._writes_seen = self._writes_done != self._writes_seen, self._writes_done
        return done or not self._writing

    def _report_full(self, stopped: DiskFull) -> None:
        """Say once, on stderr and to the service manager, why the history takes nothing now."""
        self._full_disk = stopped.no_space
        trouble = f"{NO_ROOM_NOTE} for {self._history.path}" if stopped.no_space else f"cannot write {stopped}"
        text = f"{trouble}: holding the chat, trying again every second"
        logger.warning("%s", text)
        self._service.status(text)
        self.queue.stall(True)

    def _report_room(self, full_since: Moment) -> None:
        self.queue.stall(False)
        until = self._clock.fresh()
        what, event = ("disk was full", "disk_full") if self._full_disk else ("history could not be written", "stalled")
        text = f"{what} from {full_since.iso} to {until.iso}; nothing received was lost"
        logger.info("%s", text)
        self._service.status(text)
        details = {"since": full_since.iso, "until": until.iso}
        self.queue.add(until.path, self._format.note(until, text, event, details))

    def _give_up(self) -> None:
        """Stopping on a full disk: what could not be written is still shown on stdout; say so."""
        self._given_up = True
        logger.error("stopping while the disk is full: the last chat received is not written to %s", self._history.path)

    async def close(self) -> None:
        """Write out everything queued, then stop; raise what the writing raised. A hung disk gets a second."""
        self._closing = True
        self._woken.set()
        self.queue.wake()
        try:
            done, _ = await asyncio.wait({self.task}, timeout=HISTORY_CLOSE_SECONDS)
            if not done:
                logger.error(
                    "the history file %s takes no writes (a hung disk?); stopping without the last chat",
                    self._history.path,
                )
                await cancel_and_wait(self.task)
                return
            await self.task
        finally:
            self._executor.shutdown(wait=False)


class DaemonExecutor(concurrent.futures.Executor):
    """Runs calls one at a time on a daemon thread: a call stuck in the kernel cannot hold up the exit.

    The default executor's threads are joined when asyncio.run ends, and at exit: a write hung on
    a dead disk would keep the process from ever stopping.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function, arguments, keywords = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*arguments, **keywords)
            except BaseException as error:  # handed to whoever waits on the future, who raises it
                future.set_exception(error)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        """Queue fn(*args, **kwargs) for the thread; return its future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the thread end once the calls queued are done; never waits for it, which may be stuck."""
        self._calls.put(None)


T = TypeVar("T")
_Call = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]
