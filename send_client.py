"""Post to the minechat chat: log in with a token, or register a new account and save its token."""

# No `from __future__ import annotations` here: it imports a module, where a stop would give a traceback.
# First of all, before the imports that take most of the start-up: until the client's own handlers are in
# place, Ctrl-C ends the process by the signal (read_client.py says why this way).
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
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, BinaryIO, NoReturn, TextIO

import configargparse

from _minechat.settings import (
    ENV_PREFIX,
    STDIN_MARK,
    full_path,
    make_parser,
    parse_arguments,
    port_number,
    positive_seconds,
    text_value,
)
from _minechat.shutdown import SignalCatcher, ctrl_c_raises, end_program, run_cli, run_until_signal
from _minechat.token_file import load_token
from chat_io import (
    DEFAULT_READ_PORT,
    DEFAULT_SEND_PORT,
    ENCODING,
    EXIT_OK,
    EXIT_USAGE,
    READ_CHUNK_BYTES,
    DelayFactory,
    FileError,
    LineFramer,
    backoff,
    flatten_text,
    sanitize_text,
)

if TYPE_CHECKING:
    from pathlib import Path

    from _minechat.dialogue import Account
    from _minechat.posting import Sender
    from _minechat.sender_settings import SenderSettings

logger = logging.getLogger("send_client")

DEFAULT_TOKEN_PATH = "token.txt"
# Where a token may come from before the file: the process environment is read only with the prefix.
TOKEN_SOURCES = f"--token, {ENV_PREFIX}TOKEN"
DEFAULT_REPLY_TIMEOUT = 10.0
DEFAULT_MESSAGE = "Тестовое сообщение от send_client.py"
# A stdin line longer than this (far beyond what a command line takes) is posted in pieces this long.
MAX_STDIN_LINE_BYTES = 1024 * 1024
STDIN_QUEUE_CHUNKS = 4
STDIN_HINT = (
    "Type a message and press Enter to post it; end with Ctrl-Z, then Enter."
    if sys.platform == "win32"
    else "Type a message and press Enter to post it; end with Ctrl-D."
)
NICKNAME_QUESTION = "No token found. Nickname for a new account: "


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: "Path | None" = None,
    ask_nickname: Callable[[], str | None] | None = None,
) -> "SenderSettings":
    """Build settings from the command line over the environment over .env over defaults."""
    parser = build_parser()
    args = parse_arguments(parser, argv, environ, cwd)
    args.token_path = full_path(args.token_path, cwd)
    return resolve_settings(parser, args, ask_nickname)


def build_parser() -> configargparse.ArgumentParser:
    """Return send_client's command-line parser."""
    parser = make_parser(
        "Post to the minechat chat. With no token found, register a new account and save its token.",
        port_env="SEND_PORT",
        port_default=DEFAULT_SEND_PORT,
        port_help="posting port: the one that takes logins and posts",
        verbose_help="log the whole dialogue ('>>' sent, '<<' received), token hidden",
    )
    parser.add_argument(
        "--token",
        env_var="TOKEN",
        type=text_value,
        help="account token; on the command line other users of the machine can see it, so prefer .env",
    )
    parser.add_argument(
        "--nickname",
        env_var="NICKNAME",
        type=text_value,
        help="nickname for a new account; refused when a token is found",
    )
    parser.add_argument(
        "--token_path",
        "--token-path",
        dest="token_path",
        env_var="TOKEN_PATH",
        default=DEFAULT_TOKEN_PATH,
        help="token file: read when no token is given, written after registering",
    )
    parser.add_argument(
        "--message",
        env_var="MESSAGE",
        action="append",
        type=text_value,
        help=f"message to post; repeat for several; '{STDIN_MARK}' posts each line of stdin as it arrives "
        f"(default: {DEFAULT_MESSAGE!r} after a login, nothing after a registration)",
    )
    parser.add_argument(
        "--check",
        action="store_true",  # no variable: one left set in .env would make every later run post nothing
        help="log in, print the account's nickname and post nothing (exit code 5: the token is unknown)",
    )
    parser.add_argument(
        "--read-port",
        "--read_port",
        dest="read_port",
        env_var="READ_PORT",
        default=DEFAULT_READ_PORT,
        type=port_number,
        help="reading port: the one that streams the chat, watched while posts wait for acknowledgements, "
        "so a post surely seen there is not sent again",
    )
    parser.add_argument(
        "--reply-timeout",
        "--reply_timeout",
        env_var="REPLY_TIMEOUT",
        default=DEFAULT_REPLY_TIMEOUT,
        type=positive_seconds,
        help="seconds to wait for each whole reply line of the server",
    )
    return parser


def resolve_settings(
    parser: configargparse.ArgumentParser,
    args: configargparse.Namespace,
    ask_nickname: Callable[[], str | None] | None,
) -> "SenderSettings":
    """Check the parsed options, find the token, and settle what to do."""
    messages = tuple(args.message or ())
    check_options(parser, args, messages)
    from pathlib import Path  # here: pathlib is slow to import, and --help never needs it

    from _minechat.sender_settings import SenderSettings  # here: a frozen dataclass costs --help ~1 ms to build

    token_path = Path(args.token_path)
    token, source = find_token(parser, args, token_path)
    asking = ask_nickname if not args.check and STDIN_MARK not in messages else None
    nickname = settle_nickname(parser, args.nickname, token, asking)
    if args.check and token is None:
        parser.error(f"--check needs a token ({TOKEN_SOURCES}, TOKEN in .env or {token_path}), and none was found")
    if token is None and nickname is None:
        parser.error(
            f"no token found ({TOKEN_SOURCES}, TOKEN in .env or {token_path}); "
            "give --nickname to register a new account"
        )
    return SenderSettings(
        host=args.host,
        port=args.port,
        read_port=args.read_port,
        token=token,
        token_source=source,
        nickname=nickname,
        token_path=token_path,
        messages=messages,
        connect_timeout=args.connect_timeout,
        reply_timeout=args.reply_timeout,
        verbose=args.verbose,
        check=args.check,
        quiet=args.quiet,
    )


def check_options(
    parser: configargparse.ArgumentParser, args: configargparse.Namespace, messages: tuple[str, ...]
) -> None:
    """Refuse options that contradict each other and messages that would make empty posts."""
    from _minechat.dialogue import is_blank  # here, as the posting machinery: --help never needs it

    if args.check and messages:
        parser.error("--check posts nothing; leave out --message")
    if args.check and args.nickname is not None:
        parser.error("--check logs in with a token and registers nothing; leave out --nickname")
    if any(message != STDIN_MARK and is_blank(message) for message in messages):
        parser.error("argument --message: an empty message cannot be posted")
    if any(message != STDIN_MARK and flatten_text(message) != message for message in messages):
        note_line_break("--message")


def find_token(
    parser: configargparse.ArgumentParser, args: configargparse.Namespace, token_path: "Path"
) -> tuple[str | None, str]:
    """Return the token (--token and its variables, else the token file's) and where it came from; refuse a bad one."""
    token, source = (args.token or "").strip() or None, f"{TOKEN_SOURCES} or TOKEN in .env"
    if token is None:
        token, source = load_token(token_path), f"the token file {token_path}"
    if token is not None and any(char.isspace() or not char.isprintable() for char in token):
        parser.error(f"the token from {source} contains spaces or control characters")
    if token is not None and args.nickname is not None:
        # Registering is what --nickname asks for; posting with the old account instead would surprise.
        parser.error(
            f"--nickname (or {ENV_PREFIX}NICKNAME) registers a new account, but a token was found in {source}; "
            "leave out --nickname to post with that account, or register another one with a --token_path "
            "that holds no token yet" + (f" and without {source}" if args.token else "")
        )
    return token, source


def note_line_break(option: str) -> None:
    """Say that a line break in an option's text is sent as a space."""
    logger.warning("a line break in %s becomes a space: a post is one line, and so is a nickname", option)


def settle_nickname(
    parser: configargparse.ArgumentParser,
    nickname: str | None,
    token: str | None,
    ask_nickname: Callable[[], str | None] | None,
) -> str | None:
    """Return the nickname to register, asked for when there is neither token nor nickname; refuse a blank one."""
    from _minechat.dialogue import is_blank

    if token is None and nickname is None and ask_nickname is not None:
        nickname = ask_nickname()
    if nickname is None:
        return None
    if flatten_text(nickname.strip()) != nickname.strip():
        note_line_break("--nickname")
    nickname = flatten_text(nickname).strip()
    if is_blank(nickname):
        parser.error("argument --nickname: an empty nickname cannot be registered")
    return nickname


def choose_reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """Return a read function for stream that returns what is available, up to n bytes."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file, as in tests
        return getattr(stream, "read1", stream.read)
    # The raw descriptor, not the buffered object: a daemon thread blocked inside a buffered
    # read holds its lock, and the interpreter aborts at exit when it finds the lock taken.
    return lambda size: os.read(descriptor, size)


def split_stdin_block(block: bytes, encoding: str) -> list[str]:
    """Split complete stdin lines into messages: only "\\n" ends one; other separators stay inside."""
    lines = block.decode(encoding, errors="replace")[:-1].split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


async def read_stdin_lines(stream: BinaryIO, encoding: str = ENCODING) -> AsyncIterator[list[str]]:
    """Yield the lines of a binary stream in batches as they arrive, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    # Credits bound what is read ahead: the thread takes one per chunk, the loop returns it once used.
    credits = threading.Semaphore(STDIN_QUEUE_CHUNKS)
    read = choose_reader(stream)

    def pump() -> None:
        # A thread, because stdin may be a terminal, a pipe or a file, and only a blocking read
        # works for all of them on every platform. A daemon, so a pending read never holds up exit.
        # It hands chunks over without waiting on the loop, so nothing of the loop can fail in it.
        chunk = b"x"
        while chunk:
            credits.acquire()
            try:
                chunk = read(READ_CHUNK_BYTES)
            except (OSError, ValueError):
                chunk = b""
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: we are exiting
                return

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    framer = LineFramer(MAX_STDIN_LINE_BYTES)
    while True:
        chunk = await chunks.get()
        credits.release()
        block = framer.feed(chunk) if chunk else framer.flush()
        if block:
            yield split_stdin_block(block, encoding)
        if not chunk:
            return


async def iterate_messages(
    messages: Sequence[str], stdin: BinaryIO | None, encoding: str = ENCODING
) -> AsyncIterator[list[str]]:
    """Yield the messages to post in order and in batches, '-' standing for the lines of stdin."""
    for message in messages:
        if message != STDIN_MARK:
            yield [message]
        elif stdin is not None:
            async for batch in read_stdin_lines(stdin, encoding):
                yield batch


def choose_witness_level(messages: Sequence[str]) -> int | None:
    """Say how loud the witness's troubles are: None with nothing to post, debug for a single message."""
    if not messages:
        return None
    if len(messages) == 1 and messages[0] != STDIN_MARK:
        return logging.DEBUG
    # Not a warning: posting goes on as before, only without the guard against copies.
    return logging.INFO


def make_sender(
    settings: "SenderSettings",
    stdin: BinaryIO | None,
    make_delays: DelayFactory = backoff,
    encoding: str = ENCODING,
    confirm: bool = False,
    secrets: set[str] | None = None,
) -> "Sender":
    """Return a sender for the settings, with stdin standing for '-' and secrets the set the log filter reads."""
    # Here, not at the top: --help, --version and usage errors never need the posting machinery.
    from _minechat.posting import Sender

    messages = settings.messages or ((DEFAULT_MESSAGE,) if settings.token is not None else ())
    witness_level = choose_witness_level(messages)
    produce = iterate_messages(messages, stdin, encoding)
    return Sender(settings, produce, make_delays, witness_level, confirm, secrets)


async def run(
    settings: "SenderSettings",
    stdin: BinaryIO | None,
    make_delays: DelayFactory = backoff,
    encoding: str = ENCODING,
    confirm: bool = False,
    secrets: set[str] | None = None,
) -> int:
    """Send until done or a signal; return the exit code."""
    sender = make_sender(settings, stdin, make_delays, encoding, confirm, secrets)
    with SignalCatcher() as signals:
        try:
            signum = await run_until_signal(sender.run(), signals)
        except asyncio.CancelledError:
            # Where signals cannot be caught (Windows), asyncio.run turns Ctrl-C into a cancellation.
            sender.report(logging.WARNING, "interrupted: ")
            raise
        if signum is not None:
            sender.report(logging.WARNING, "interrupted: ")
            return signals.exit_code
    return EXIT_OK


async def run_check(settings: "SenderSettings") -> int:
    """Check the token until done or a signal; print the nickname; return the exit code."""
    from _minechat.posting import check_account  # here: only --check needs it

    with SignalCatcher() as signals:
        result: list[Account] = []

        async def check() -> None:
            result.append(await check_account(settings))

        signum = await run_until_signal(check(), signals)
        if signum is not None:
            return signals.exit_code
    if not tell(sanitize_text(result[0].nickname), sys.stdout):
        raise FileError("cannot print the nickname: stdout is full or closed")
    return EXIT_OK


def tell(text: str, stream: TextIO) -> bool:
    """Write a line to stdout or stderr; False if it cannot be written (full, closed, nobody reading)."""
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        # Nothing more goes to this stream: Python's last flush at exit would only fail again, loudly.
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        return False
    return True


def ask_nickname(stdin: TextIO | None = None, out: TextIO | None = None) -> str | None:
    """Ask the person at the terminal for a nickname until one is given; None at the end of input."""
    from _minechat.dialogue import is_blank

    stdin = stdin or sys.stdin
    out = out or sys.stderr  # the prompt is not output: stdout may be a file
    encoding = getattr(stdin, "encoding", None) or ENCODING
    while True:
        try:
            with ctrl_c_raises():  # before the question: a Ctrl-C as soon as it shows must end its line too
                out.write(NICKNAME_QUESTION)
                out.flush()
                raw = stdin.buffer.readline()
        except KeyboardInterrupt:
            out.write("\n")  # Ctrl-C: end the prompt's line, so the shell's prompt starts on its own
            out.flush()
            raise
        if not raw:  # Ctrl-D
            out.write("\n")
            return None
        try:
            nickname = raw.decode(encoding)
        except UnicodeDecodeError:
            out.write(f"That is not {encoding} text; type the nickname again.\n")
            continue
        if not is_blank(nickname):
            return nickname


def main(argv: Sequence[str] | None = None) -> int:
    """Run send_client from the command line; return the exit code."""
    interactive = sys.stdin is not None and sys.stdin.isatty()
    secrets: set[str] = set()  # every token met, which the log filter hides

    def parse() -> "SenderSettings":
        settings = parse_settings(argv, ask_nickname=ask_nickname if interactive else None)
        if settings.token is not None:
            secrets.add(settings.token)
        return settings

    async def start(settings: "SenderSettings") -> int:
        stdin = None
        if settings.streaming:
            if sys.stdin is None:
                logger.error("--message %s reads stdin, but stdin is closed", STDIN_MARK)
                return EXIT_USAGE
            if interactive and not settings.quiet:
                tell(STDIN_HINT, sys.stderr)
            stdin = sys.stdin.buffer
        if settings.check:
            return await run_check(settings)
        encoding = getattr(sys.stdin, "encoding", None) or ENCODING
        # Only a person at a terminal wants a line per post; a pipe stays quiet until the summary.
        confirm = interactive and settings.streaming and not settings.quiet
        return await run(settings, stdin, encoding=encoding, confirm=confirm, secrets=secrets)

    return run_cli(parse, start, logger, secrets)


def program() -> NoReturn:
    """Run as a command (the installed minechat-send, or python send_client.py): end as main says, by a signal too."""
    end_program(main())


if __name__ == "__main__":
    program()
