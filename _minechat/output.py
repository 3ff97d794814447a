"""Text to streams that may be stuck: raw and background writers, logging, the secret filter."""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from typing import TextIO

from chat_io import ENCODING, STATUS_MARK, redact


class SecretFilter(logging.Filter):
    """Keeps the secrets it is given out of every log record it sees.

    The collection is the caller's and is read at each record, so secrets learnt later (a new
    account's token) are hidden from then on.
    """

    def __init__(self, secrets: Collection[str] = frozenset()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = redact(message, self.secrets)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


def configure_logging(
    verbose: bool, background: bool = False, secrets: Collection[str] = frozenset(), quiet: bool = False
) -> None:
    """Send log records to stderr, one line each, with the given secrets hidden; quiet keeps warnings and errors.

    With background, records are written by a thread, so a stderr nobody reads (a paused
    terminal) never holds up the caller; what does not fit in a bounded queue is skipped.
    """
    if background:
        handler: logging.Handler = BackgroundHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(SecretFilter(secrets))
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Our debug lines, not asyncio's ("Using selector: EpollSelector" at every start).
    logging.getLogger("asyncio").setLevel(max(level, logging.INFO))


def flush_logging() -> None:
    """Give every log handler a moment to write out what it holds."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def make_output_safe(stream: object) -> None:
    """Let a console that cannot show every character print escapes instead of failing."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")


OUTPUT_LIMIT_CHARS = 256 * 1024
OUTPUT_CLOSE_TIMEOUT = 0.5
OUTPUT_RETRY_SECONDS = 0.01


class RawTextOutput:
    """Writes text straight to a stream's raw file, so a write blocked on a full pipe holds no lock.

    A blocked write inside a buffered stream holds the buffer's lock, and the interpreter aborts
    at exit when it finds that lock taken; the raw file has no lock to take.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._encoding = getattr(stream, "encoding", None) or ENCODING
        self._raw = getattr(getattr(stream, "buffer", None), "raw", None)

    def write(self, text: str) -> None:
        """Write all of text, blocking as long as the reader makes us."""
        if self._raw is None:  # a stand-in stream without a file, as under test capture
            self._stream.write(text)
            self._stream.flush()
            return
        data = memoryview(text.encode(self._encoding, errors="backslashreplace"))
        while data:
            written = self._raw.write(data)
            if written is None:  # someone made the file non-blocking: wait, as a blocking write would
                threading.Event().wait(OUTPUT_RETRY_SECONDS)
                continue
            data = data[written:]

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the file."""


class BackgroundWriter:
    """Writes text from a daemon thread, so the caller never waits for a slow or stuck output.

    At most limit characters wait; what does not fit is skipped and counted, and skip_note(count)
    takes its place once there is room again. After the first failed write, nothing more is tried.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        skip_note: Callable[[int], str],
        limit: int = OUTPUT_LIMIT_CHARS,
        name: str = "output",
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._write = write
        self._skip_note = skip_note
        self._limit = limit
        self._on_failure = on_failure
        self._chunks: deque[str] = deque()
        self._size = 0  # queued and being written
        self._skipped = 0  # line ends skipped, not yet reported
        self._skipping_line = False  # skipping up to the end of a line whose start was skipped
        self._at_line_start = True
        self._closing = False
        self._stuck = False
        self._changed = threading.Condition()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, text: str) -> bool:
        """Queue text; return False if it was skipped (no room) or cannot be written any more."""
        with self._changed:
            if self.failure is not None or self._closing:
                return False
            if self._skipping_line:
                # The start of this line was skipped: its rest must not pass for a line of its own.
                end = text.find("\n")
                if end < 0:
                    return False
                self._skipping_line = False
                self._skipped += 1
                text = text[end + 1 :]
                if not text:
                    return False
            if self._size and self._size + len(text) > self._limit:
                self._skipped += text.count("\n")
                self._skipping_line = not text.endswith("\n")
                return False
            self._queue_skip_note()
            self._chunks.append(text)
            self._size += len(text)
            self._at_line_start = text.endswith("\n")
            self._changed.notify_all()
            return True

    def _queue_skip_note(self) -> None:
        """Mark the place of a gap (with the lock held)."""
        if self._skipped:
            note = ("" if self._at_line_start else "\n") + self._skip_note(self._skipped)
            self._skipped = 0
            self._at_line_start = True
            self._chunks.append(note)
            self._size += len(note)

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._chunks:
                    self._queue_skip_note()  # caught up: say now what was skipped, not at the next line
                while not self._chunks and not self._closing:
                    self._changed.wait()
                if not self._chunks:
                    return
                text = "".join(self._chunks)
                self._chunks.clear()
            try:
                self._write(text)
            except Exception as error:  # whatever the output raises, the client goes on without it
                with self._changed:
                    self.failure = error
                    self._chunks.clear()
                    self._size = 0
                    self._changed.notify_all()
                if self._on_failure is not None:
                    self._on_failure(error)
                return
            with self._changed:
                self._size -= len(text)
                self._changed.notify_all()

    def wait_written(self, timeout: float = OUTPUT_CLOSE_TIMEOUT) -> bool:
        """Wait until everything queued is written, at most timeout seconds; tell if it was.

        Once a wait has run out, later ones return at once: the output is stuck, and each
        further wait would only delay the exit.
        """
        with self._changed:
            if self._stuck:
                return False
            written = self._changed.wait_for(lambda: self._size == 0 or self.failure is not None, timeout)
            self._stuck = not written
            return written

    def close(self, timeout: float = OUTPUT_CLOSE_TIMEOUT) -> None:
        """Write out what is queued, waiting at most timeout, then stop the thread (or leave it stuck)."""
        self.wait_written(timeout)
        with self._changed:
            self._closing = True
            self._changed.notify_all()


class BackgroundHandler(logging.Handler):
    """A log handler that writes to a stream through a BackgroundWriter."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._writer = BackgroundWriter(
            RawTextOutput(stream).write, lambda count: f"{STATUS_MARK} {count} log lines skipped\n", name="log"
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.put(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self._writer.wait_written()

    def close(self) -> None:
        self._writer.close()
        super().close()


# How a terminal shows a marked chat line: bold (normal intensity after it), then the bell.
BOLD = "\x1b[1m"
NORMAL_INTENSITY = "\x1b[22m"
BELL = "\a"


def terminal_marks(stream: TextIO, environ: Mapping[str, str]) -> Callable[[str, bool], str] | None:
    """Return how to mark a chat line on stream, or None when it is no terminal (a pipe or a file is left as is).

    NO_COLOR (https://no-color.org), set to anything, leaves the text plain; the bell still rings.
    """
    isatty = getattr(stream, "isatty", None)
    try:
        if isatty is None or not isatty():
            return None
    except (ValueError, OSError):  # closed, or not a file at all
        return None
    if environ.get("NO_COLOR") or not shows_escape_codes(stream):
        return ring_only
    return bold_and_ring


# Windows' console mode that makes it act on escape codes instead of printing them (Windows 10 and later).
ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004


def shows_escape_codes(stream: TextIO) -> bool:
    """Tell whether a terminal acts on escape codes; a Windows console is asked to, and may not be able to."""
    if sys.platform != "win32":
        return True
    try:
        import ctypes
        import msvcrt

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = msvcrt.get_osfhandle(stream.fileno())  # type: ignore[attr-defined]
        mode = ctypes.c_uint32()
        if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
            return False  # no console (mintty, a redirected handle): no way to know, so no codes
        return bool(kernel32.SetConsoleMode(handle, mode.value | ENABLE_VIRTUAL_TERMINAL_PROCESSING))
    except (AttributeError, OSError, ValueError):
        return False


def bold_and_ring(text: str, ring: bool) -> str:
    """Show text in bold; ring the bell after it if asked."""
    return BOLD + text + NORMAL_INTENSITY + (BELL if ring else "")


def ring_only(text: str, ring: bool) -> str:
    """Leave text as it is; ring the bell after it if asked."""
    return text + BELL if ring else text
