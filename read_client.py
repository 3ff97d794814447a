"""Tail the minechat chat forever: print every line and append it, stamped, to a history file."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import aiofiles
import aiofiles.os
import configargparse

from chat_io import (
    DEFAULT_READ_PORT,
    ENCODING,
    EXIT_INTERRUPTED,
    READ_CHUNK_BYTES,
    ChatError,
    ConnectionFailed,
    FileError,
    LineFramer,
    ServiceNotifier,
    SignalCatcher,
    backoff,
    configure_logging,
    describe_error,
    exit_code_for,
    format_history_block,
    format_status_line,
    is_retryable,
    make_output_safe,
    make_parser,
    open_connection,
    parse_arguments,
    run_until_signal,
)

logger = logging.getLogger("read_client")

DEFAULT_LOG_PATH = "chat_logs.txt"
OWNER_ONLY = 0o600

DelayFactory = Callable[[], Iterator[float]]


@dataclass(frozen=True)
class ReaderSettings:
    """Everything read_client needs, parsed once."""

    host: str
    port: int
    log_path: Path
    connect_timeout: float
    verbose: bool


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ReaderSettings:
    """Build settings from the command line over the environment over .env over defaults."""
    parser = build_parser()
    args = parse_arguments(parser, argv, environ, cwd)
    return ReaderSettings(
        host=args.host,
        port=args.port,
        log_path=Path(args.log_path),
        connect_timeout=args.connect_timeout,
        verbose=args.verbose,
    )


def build_parser() -> configargparse.ArgumentParser:
    """Return read_client's command-line parser."""
    parser = make_parser(
        "Tail the minechat chat: print every line and append it, stamped, to a history file.",
        port_env="READ_PORT",
        port_default=DEFAULT_READ_PORT,
    )
    parser.add_argument(
        "--log_path",
        "--log-path",
        dest="log_path",
        env_var="LOG_PATH",
        default=DEFAULT_LOG_PATH,
        help="history file, appended to and never truncated",
    )
    return parser


def open_owner_only(path: str, flags: int) -> int:
    """Create files readable and writable by their owner only (an opener for open())."""
    return os.open(path, flags, OWNER_ONLY)


def identify_file(stat: os.stat_result) -> tuple[int, int]:
    """Return what tells one file from another, even after a rename."""
    return stat.st_dev, stat.st_ino


class HistoryFile:
    """The history file, opened once for appending and reopened if it is moved or deleted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: aiofiles.threadpool.binary.AsyncFileIO | None = None
        self._identity: tuple[int, int] | None = None

    async def __aenter__(self) -> HistoryFile:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _open(self) -> None:
        try:
            # Unbuffered: every write goes straight to the OS, so no flush is needed and
            # nothing is left in a buffer when the process stops.
            self._file = await aiofiles.open(self.path, "ab", buffering=0, opener=open_owner_only)
            self._identity = identify_file(os.fstat(self._file.fileno()))
        except OSError as error:
            raise FileError(
                f"cannot open history file {self.path}: {describe_error(error)}; choose another --log_path"
            ) from error

    async def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await file.close()

    async def _follow_path(self) -> bool:
        """Reopen at the configured path if the file there is no longer ours; tell if we did."""
        try:
            current = identify_file(await aiofiles.os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current == self._identity:
            return False
        logger.warning("history file %s was moved or deleted; continuing in a new one", self.path)
        await self._close()
        await self._open()
        return True

    async def write(self, text: str) -> None:
        """Append text, whole, to the file now at the configured path."""
        try:
            if await self._follow_path():
                text = (
                    format_status_line("history continues here; the earlier file was moved or deleted", datetime.now())
                    + text
                )
            assert self._file is not None
            data = memoryview(text.encode(ENCODING))
            while data:
                written = await self._file.write(data)
                data = data[written:]
        except OSError as error:
            raise FileError(f"cannot write history file {self.path}: {describe_error(error)}") from error


class Echo:
    """Prints received chat; if the output goes away, the history file still gets everything."""

    def __init__(self, out: TextIO) -> None:
        self._out: TextIO | None = out

    def show(self, text: str) -> None:
        """Print text and push it out at once."""
        if self._out is None:
            return
        try:
            self._out.write(text)
            self._out.flush()
        except OSError as error:
            logger.warning("cannot print chat any more (%s); still writing the history file", describe_error(error))
            self._out = None


class ChatTail:
    """Receives the chat and records it, reconnecting forever."""

    def __init__(
        self,
        settings: ReaderSettings,
        history: HistoryFile,
        out: TextIO,
        make_delays: DelayFactory,
        service: ServiceNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        self.echo = Echo(out)
        self.make_delays = make_delays
        self.address = f"{settings.host}:{settings.port}"
        self.received = 0
        self.connected = False
        self.service = service or ServiceNotifier({})  # an empty environment: one that never sends

    async def note(self, text: str, level: int = logging.INFO) -> None:
        """Report a connection event on stderr and in the history file."""
        logger.log(level, "%s", text)
        await self.history.write(format_status_line(text, datetime.now()))
        self.service.status(text)

    async def record(self, block: bytes) -> None:
        """Write a block of complete lines to the history file, then print it."""
        if block:
            text = format_history_block(block, datetime.now())
            await self.history.write(text)
            self.echo.show(text)

    async def receive(self) -> None:
        """Hold one connection until it ends, counting what it delivered in self.received."""
        self.received = 0
        self.connected = False
        framer = LineFramer()
        await self.note(f"connecting to {self.address}")
        async with open_connection(self.settings.host, self.settings.port, self.settings.connect_timeout) as (
            reader,
            _,
        ):
            self.connected = True
            await self.note(f"connected to {self.address}")
            try:
                while chunk := await reader.read(READ_CHUNK_BYTES):
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("<< %r", chunk)
                    self.received += len(chunk)
                    await self.record(framer.feed(chunk))
            finally:
                # Whatever ended the connection, an unfinished last line is still kept.
                await self.record(framer.flush())

    async def run(self) -> None:
        """Receive forever; back off between tries, starting over after a connection that delivered."""
        delays = self.make_delays()
        while True:
            try:
                await self.receive()
                error: BaseException = ConnectionFailed("the server closed the connection")
            except Exception as caught:  # sorted by is_retryable below
                if not is_retryable(caught):
                    raise
                error = caught
            if self.received:
                delays = self.make_delays()
            delay = next(delays)
            what = f"connection lost: {describe_error(error)}" if self.connected else describe_error(error)
            await self.note(f"{what}; next try in {delay:.1f} s", logging.WARNING)
            await asyncio.sleep(delay)


async def run(settings: ReaderSettings, out: TextIO, make_delays: DelayFactory = backoff) -> int:
    """Tail the chat until a signal; return the exit code."""
    with SignalCatcher() as signals, ServiceNotifier() as service:
        async with HistoryFile(settings.log_path) as history, service.watchdog():
            tail = ChatTail(settings, history, out, make_delays, service)
            service.ready()  # the history file is open, so the service has started
            signum = await run_until_signal(tail.run(), signals)
            await tail.note(f"stopped by {signal.Signals(signum or signal.SIGINT).name}")
            return signals.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run read_client from the command line; return the exit code."""
    make_output_safe(sys.stdout)
    make_output_safe(sys.stderr)
    settings = parse_settings(argv)
    configure_logging(settings.verbose)
    try:
        return asyncio.run(run(settings, sys.stdout))
    except ChatError as error:
        logger.error("%s", error)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
