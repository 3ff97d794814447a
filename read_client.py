"""Tail the minechat chat forever: print every line and append it, stamped, to a history file."""

# No `from __future__ import annotations` here: it imports a module, where a stop would give a traceback.
# First of all, before the imports that take most of the start-up: until the client's own handlers are in
# place, Ctrl-C ends the process by the signal, as its default disposition would. Not by an exception:
# raised inside an import it can be lost ("Exception ignored in _get_module_lock") and the client go on
# running. Nor by SIG_DFL itself: a Ctrl-C that Python has noted but not yet handled would then be
# dropped ("Signal 2 ignored due to race condition"); this handler takes it. SIGTERM and SIGHUP keep
# their default. _signal, not signal: it is loaded already, while signal imports enum first (5 ms).
import _signal


def end_by_signal(signum: int, frame: object) -> None:
    """Die by a stop signal that came before the client's own handlers were in place."""
    _signal.signal(signum, _signal.SIG_DFL)
    _signal.raise_signal(signum)


if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, end_by_signal)

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TextIO

import configargparse

from _minechat.output import RawTextOutput, terminal_marks
from _minechat.settings import (
    ListAction,
    backlog_count,
    context_count,
    day_count,
    full_pattern,
    log_path_value,
    make_parser,
    moment_value,
    nickname_value,
    non_negative_seconds,
    parse_arguments,
    search_pattern,
    text_value,
    time_format_value,
    word_value,
)
from _minechat.shutdown import SignalCatcher, cancel_and_wait, end_program, first_of, run_cli, run_until_signal
from _minechat.stamping import DEFAULT_TIME_FORMAT, JSONL_FORMAT, TEXT_FORMAT
from _minechat.view import Mark  # loaded already, by stamping
from chat_io import DEFAULT_READ_PORT, EXIT_FAILURE, EXIT_SIGNAL_BASE, DelayFactory, backoff

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from _minechat.history import HistoryPattern

logger = logging.getLogger("read_client")

DEFAULT_LOG_PATH = "chat_logs.txt"
DEFAULT_BACKLOG = 10
# The public chat's bots post every few seconds: a minute of silence means a dead connection.
DEFAULT_IDLE_TIMEOUT = 60


@dataclass(frozen=True)
class ReaderSettings:
    """Everything read_client needs, parsed once."""

    host: str
    port: int
    log_path: "Path"  # may hold strftime fields, and %% for a literal %
    connect_timeout: float
    verbose: bool
    time_format: str = DEFAULT_TIME_FORMAT
    history_format: str = TEXT_FORMAT
    backlog: int = DEFAULT_BACKLOG
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # 0: never
    ignore: tuple[str, ...] = ()  # nicknames whose lines stdout and the backlog leave out
    highlight: tuple[str, ...] = ()  # words that mark a line on a terminal, and ring its bell
    quiet: bool = False  # stderr: warnings and errors only
    search: str | None = None  # a pattern: answer --search from the history instead of tailing
    nick: str | None = None
    since: "datetime | None" = None  # local time, the first moment asked about (a string: no import at start)
    until: "datetime | None" = None  # local time, the first moment past the range
    context: int = 0
    coverage: bool = False
    compress: bool = False
    keep_days: int = 0  # 0: keep every file


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: "Path | None" = None,
) -> ReaderSettings:
    """Build settings from the command line over the environment over .env over defaults."""
    parser = build_parser()
    args = parse_arguments(parser, argv, environ, cwd)
    check_archive_options(parser, args)
    return ReaderSettings(
        host=args.host,
        port=args.port,
        log_path=full_pattern(args.log_path, cwd),
        connect_timeout=args.connect_timeout,
        verbose=args.verbose,
        quiet=args.quiet,
        time_format=args.time_format,
        history_format=args.history_format,
        backlog=args.backlog,
        idle_timeout=args.idle_timeout,
        ignore=tuple(args.ignore or ()),
        highlight=tuple(args.highlight or ()),
        search=args.search,
        nick=args.nick,
        since=args.since.start if args.since else None,
        until=args.until.start + args.until.length if args.until else None,
        context=args.context,
        coverage=args.coverage,
        compress=args.compress,
        keep_days=args.keep_days or 0,
    )


def build_parser() -> configargparse.ArgumentParser:
    """Return read_client's command-line parser."""
    parser = make_parser(
        "Tail the minechat chat: print every line and append it, stamped, to a history file.",
        port_env="READ_PORT",
        port_default=DEFAULT_READ_PORT,
        port_help="reading port: the one that streams the chat",
        verbose_help="log at debug level",
    )
    parser.add_argument(
        "--log_path",
        "--log-path",
        dest="log_path",
        env_var="LOG_PATH",
        default=DEFAULT_LOG_PATH,
        type=log_path_value,
        help="history file, appended to and never truncated; date fields start a new file each day",
    )
    parser.add_argument(
        "--time-format",
        "--time_format",
        dest="time_format",
        env_var="TIME_FORMAT",
        default=DEFAULT_TIME_FORMAT,
        type=time_format_value,
        help="strftime format of the time stamp of each line, in the text history and on stdout",
    )
    parser.add_argument(
        "--format",
        dest="history_format",
        env_var="FORMAT",
        default=TEXT_FORMAT,
        choices=(TEXT_FORMAT, JSONL_FORMAT),
        help="history file format: text lines, or jsonl (one JSON object per line); stdout is text",
    )
    parser.add_argument(
        "--backlog",
        env_var="BACKLOG",
        default=DEFAULT_BACKLOG,
        type=backlog_count,
        help="how many chat lines of the history to show at start, before live chat; 0 shows none",
    )
    parser.add_argument(
        "--idle-timeout",
        "--idle_timeout",
        dest="idle_timeout",
        env_var="IDLE_TIMEOUT",
        default=DEFAULT_IDLE_TIMEOUT,
        type=non_negative_seconds,
        help="seconds without a byte from the server after which the connection counts as lost; 0 never",
    )
    parser.add_argument(
        "--ignore",
        env_var="IGNORE",
        action=ListAction,
        type=nickname_value,
        metavar="NICK",
        help="leave out the lines of this nickname on stdout and in the backlog (the history keeps them); "
        "repeat for several; the variable takes a comma-separated list",
    )
    parser.add_argument(
        "--highlight",
        env_var="HIGHLIGHT",
        action=ListAction,
        type=word_value,
        metavar="WORD",
        help="on a terminal, mark each chat line with this word in its text (whole, in any case) and ring the bell; "
        "repeat for several; the variable takes a comma-separated list",
    )
    add_archive_options(parser)
    return parser


def add_archive_options(parser: configargparse.ArgumentParser) -> None:
    """Add the options that ask the history instead of tailing the chat, and those that keep it small."""
    archive = parser.add_argument_group("asking the history (connects to nothing, takes no lock)")
    archive.add_argument(
        "--search",
        type=search_pattern,
        metavar="PATTERN",
        help="print the chat lines of the history that match a regular expression (case-insensitive unless "
        "it has an upper-case letter), oldest first, and exit",
    )
    archive.add_argument("--nick", type=text_value, metavar="NICK", help="with --search: only lines of this nickname")
    archive.add_argument(
        "--since",
        type=moment_value,
        metavar="WHEN",
        help="with --search or --coverage: from YYYY-MM-DD or YYYY-MM-DD HH:MM on",
    )
    archive.add_argument(
        "--until",
        type=moment_value,
        metavar="WHEN",
        help="with --search or --coverage: up to YYYY-MM-DD or YYYY-MM-DD HH:MM, included",
    )
    archive.add_argument(
        "--context",
        type=context_count,
        default=0,
        metavar="N",
        help="with --search: lines to print before and after each match",
    )
    archive.add_argument(
        "--coverage",
        action="store_true",
        help="print when the reader was connected and each gap with its reason, then the totals, and exit",
    )
    keeping = parser.add_argument_group("keeping a dated history small")
    keeping.add_argument(
        "--compress",
        env_var="COMPRESS",
        action="store_true",
        help="gzip each day's file once the reader has moved on to the next (a dated history only)",
    )
    keeping.add_argument(
        "--keep-days",
        "--keep_days",
        dest="keep_days",
        env_var="KEEP_DAYS",
        type=day_count,
        metavar="N",
        help="remove the files of a dated history older than this many days",
    )


def check_archive_options(parser: configargparse.ArgumentParser, args: configargparse.Namespace) -> None:
    """Refuse archive options that cannot work together or with this --log_path."""
    if args.search is not None and args.coverage:
        parser.error("--search and --coverage ask one thing each; give one of them")
    for option, given in (("--nick", args.nick is not None), ("--context", args.context)):
        if given and args.search is None:
            parser.error(f"{option} goes with --search")
    if (args.since or args.until) and args.search is None and not args.coverage:
        parser.error("--since and --until go with --search or --coverage")
    if args.since and args.until and args.since.start >= args.until.start + args.until.length:
        parser.error("--since is after --until: nothing lies between them")
    if args.compress or args.keep_days:
        from _minechat.history import has_fields  # here: only these options ask whether the path is dated

        if not has_fields(args.log_path):
            parser.error(
                "--compress and --keep-days need a dated --log_path (such as logs/%Y-%m-%d.txt); "
                "for a single history file use logrotate, whose moves the reader follows (see docs/service.md)"
            )


async def run_while_writing(work: Coroutine[object, object, None], writer: asyncio.Task[None]) -> None:
    """Run work until it ends, or until the writer fails; raise what either raised."""
    task = asyncio.ensure_future(work)
    try:
        await first_of(task, asyncio.wait({writer}))  # the writer is only watched, never cancelled here
    finally:
        await cancel_and_wait(task)
    if writer.done():
        writer.result()
    task.result()


def answer_query(settings: ReaderSettings, out: TextIO) -> int:
    """Answer --search or --coverage from the history's files, oldest first, on stdout; connect to nothing."""
    from _minechat import archive  # here: only the query modes read the whole history
    from _minechat.history import HistoryPattern

    try:
        return archive.answer(settings, HistoryPattern(settings.log_path), out.write)
    except BrokenPipeError:  # stdout went away (| head): done, as grep is
        return EXIT_SIGNAL_BASE + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else EXIT_FAILURE


def start_tidying(
    settings: ReaderSettings, pattern: "HistoryPattern", current: Callable[[], "Path"]
) -> "asyncio.Task[None] | None":
    """Start --compress and --keep-days on the history's finished files, if asked: at start and at each new file."""
    if not (settings.compress or settings.keep_days):
        return None
    from _minechat.retention import keep_small  # here: only a run that keeps its history small needs it

    return asyncio.ensure_future(keep_small(pattern, current, settings.compress, settings.keep_days))


async def run(
    settings: ReaderSettings,
    out: TextIO,
    make_delays: DelayFactory = backoff,
    now: Callable[[], float] = time.time,
    mark: Mark | None = None,
) -> int:
    """Tail the chat until a signal, or answer a question about the history; return the exit code.

    With mark (a terminal's), --highlight marks lines.
    """
    if settings.search is not None or settings.coverage:
        return answer_query(settings, out)
    # Imported here, not at the top: --help and a usage error need none of the reader's machinery.
    from _minechat.history import HISTORY_FORMATS, HistoryFile, HistoryPattern
    from _minechat.output import ring_only
    from _minechat.recorder import Recorder, StdoutPrinter
    from _minechat.stamping import StampClock, ViewStamper
    from _minechat.systemd import ServiceNotifier
    from _minechat.tail import ChatTail
    from _minechat.view import ViewRules

    with SignalCatcher() as signals, ServiceNotifier() as service:
        view = ViewRules(settings.ignore, settings.highlight if mark is not None else ())
        shown = mark or ring_only  # only --highlight marks, and only on a terminal
        pattern = HistoryPattern(settings.log_path)
        history_format = HISTORY_FORMATS[settings.history_format]
        clock = StampClock(settings.time_format, pattern.expand, now)

        history = HistoryFile(pattern, history_format, clock)
        await asyncio.to_thread(history.open, clock.read().path)
        printer = StdoutPrinter(out, lambda: history.path, clock)
        try:
            if settings.backlog:
                from _minechat.backlog import show_backlog  # here: only a run with a backlog reads one

                backlog = show_backlog(
                    history,
                    settings.backlog,
                    settings.time_format,
                    printer.show,
                    clock,
                    (lambda line: view.show(line, shown)) if view else None,
                )
                if await run_until_signal(backlog, signals) is not None:
                    return signals.exit_code  # Ctrl-C while a long history is read back
            tidying = start_tidying(settings, pattern, lambda: history.path)
            recorder = Recorder(history, printer, clock, service, history_format)
            make_display = (lambda: ViewStamper(view, shown)) if view else None
            tail = ChatTail(settings, recorder.queue, make_delays, service, clock, history_format, make_display)
            try:
                async with service.watchdog(recorder.progressing):
                    service.ready()  # the history file is open and locked: we are working
                    signum = await run_until_signal(run_while_writing(tail.run(), recorder.task), signals)
                service.stopping()
                name = signal.Signals(signum or signal.SIGINT).name
                tail.note(f"stopped by {name}", "stopped", signal=name)
            finally:
                # Whatever stopped us, every line received goes to disk before we exit.
                await recorder.close()
                if tidying is not None:
                    await cancel_and_wait(tidying)
            return signals.exit_code
        finally:
            printer.close()
            history.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run read_client from the command line; return the exit code."""
    return run_cli(
        lambda: parse_settings(argv),
        lambda settings: run(settings, RawTextOutput(sys.stdout), mark=terminal_marks(sys.stdout, os.environ)),
        logger,
    )


def program() -> NoReturn:
    """Run as a command (the installed minechat-read, or python read_client.py): end as main says, by a signal too."""
    end_program(main())


if __name__ == "__main__":
    program()
