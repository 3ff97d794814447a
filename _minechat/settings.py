"""Settings: configargparse over the environment and .env, and the value parsers of both clients."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, NamedTuple, NoReturn

import configargparse

from _minechat import __version__
from _minechat.view import NICK_SEPARATOR, split_list
from chat_io import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HOST,
    ENCODING,
    EXIT_USAGE,
    FileError,
    describe_error,
    sanitize_text,
    shorten,
)

if TYPE_CHECKING:
    from datetime import datetime, timedelta
    from pathlib import Path

logger = logging.getLogger(__name__)

DOTENV_NAME = ".env"

MIN_PORT = 1
MAX_PORT = 65535

ENVIRONMENT_SOURCE = "the environment"
# In the process environment every variable carries it: HOST, TOKEN or FORMAT there belong to other
# programs (some shells export HOST). A .env is ours alone, and takes the names with or without it.
ENV_PREFIX = "MINECHAT_"
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
# A label of a host name as the resolver gets it (IDNA-encoded): letters, digits, hyphens (not first
# or last) and underscores (some internal names have them); a space or a leading "-" can never resolve.
_HOST_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
# Shorter than any connection or reply can take: a value below it can never work.
MIN_TIMEOUT_SECONDS = 0.001
_SURROGATES = "[\ud800-\udfff]"  # text: compiled on first use, not at every start
# What a lone surrogate stands for: an undecodable byte of argv, the environment or a name.
_SURROGATE_ESCAPE_BASE = 0xDC00
_SURROGATE_ESCAPE_BYTES = range(0xDC80, 0xDD00)


class Setting(NamedTuple):  # a NamedTuple, not a frozen dataclass: a third of the cost at every start
    """The value of a variable, where it was found and how it was spelled there, for error messages."""

    value: str
    source: str
    name: str


def environment_name(name: str) -> str:
    """Return the name an option's variable has in the process environment."""
    return ENV_PREFIX + name


class ChatArgumentParser(configargparse.ArgumentParser):
    """configargparse's parser, naming each option's variable in --help without its generic sentence."""

    def format_help(self) -> str:
        for action in self._actions:
            name = getattr(action, "env_var", None)
            note = f"[env var: {environment_name(name or '')}]"
            if name and action.help and note not in action.help:
                action.help += " " + note
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        """Report a usage error in one line, as every error is, and exit with EXIT_USAGE."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class ListAction(argparse._AppendAction):
    """A repeatable option whose variable holds a comma-separated list (IGNORE=Eva,Vlad)."""


def terminal_columns() -> int:
    """Return the terminal's width as shutil.get_terminal_size does, without shutil, which costs --help 3%."""
    with suppress(ValueError):
        columns = int(os.environ.get("COLUMNS", ""))
        if columns > 0:
            return columns
    try:
        columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return DEFAULT_COLUMNS
    return columns if columns > 0 else DEFAULT_COLUMNS


DEFAULT_COLUMNS = 80


class HelpFormatter(configargparse.ArgumentDefaultsHelpFormatter):
    """Show a default only when there is one, and only if the help text does not give it already."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        # As argparse sizes it, two columns short of the terminal.
        super().__init__(prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width)

    def _get_help_string(self, action: configargparse.Action) -> str | None:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def is_undecodable(text: str) -> bool:
    """Tell whether text holds bytes that were not valid UTF-8 (lone surrogates, as Python decodes them)."""
    return re.search(_SURROGATES, text) is not None


def _show_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _SURROGATE_ESCAPE_BYTES:
        return f"\\x{code - _SURROGATE_ESCAPE_BASE:02x}"
    return f"\\u{code:04x}"


def show_value(text: str) -> str:
    """Escape a value, undecodable bytes included, and cut it for an error message."""
    return shorten(re.sub(_SURROGATES, _show_surrogate, text))


def text_value(value: str) -> str:
    """Parse free text for argparse (a message, a nickname, a token): it must be valid UTF-8."""
    if is_undecodable(value):
        raise configargparse.ArgumentTypeError("not valid UTF-8 text")
    return value


def nickname_value(value: str) -> str:
    """Parse a nickname to match chat lines by: UTF-8 text, not empty, that a chat line's nickname can be."""
    text_value(value)
    if not value.strip():
        raise configargparse.ArgumentTypeError("it names no nickname")
    if sanitize_text(value) != value:  # the chat shows them escaped: such a nickname would never match
        raise configargparse.ArgumentTypeError("it holds control characters or line breaks")
    if NICK_SEPARATOR in value:
        raise configargparse.ArgumentTypeError(
            f"a nickname ends at the first '{NICK_SEPARATOR}', so '{show_value(value)}' never matches"
        )
    return value


def word_value(value: str) -> str:
    """Parse a word to look for in chat lines: UTF-8 text, not empty."""
    text_value(value)
    if not value.strip():
        raise configargparse.ArgumentTypeError("it holds no word")
    if sanitize_text(value) != value:
        raise configargparse.ArgumentTypeError("it holds control characters or line breaks")
    return value.strip()


def is_ip_address(text: str, version: int | None = None) -> bool:
    """Tell whether text is an IP address (of the given version, if one is given)."""
    import ipaddress  # here: a --help never needs it

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def host_name(value: str) -> str:
    """Parse a host for argparse: a name IDNA accepts or an IP address; [IPv6] loses its brackets."""
    if is_undecodable(value):
        raise configargparse.ArgumentTypeError("not valid UTF-8 text")
    host = value.strip()
    if "[" in host or "]" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        if not is_ip_address(inner, version=6):
            raise configargparse.ArgumentTypeError(f"'{show_value(value)}': only an IPv6 address goes in brackets")
        return inner
    if is_ip_address(host):
        return host
    try:
        encoded = host.encode("idna")  # what the resolver will do; it fails on an empty or overlong label
    except UnicodeError:
        encoded = b""
    if not encoded:
        raise configargparse.ArgumentTypeError(
            f"'{show_value(value)}' is not a host name (every dot-separated part must be 1 to 63 characters)"
        )
    labels = encoded.decode("ascii").removesuffix(".").split(".")
    if not all(re.fullmatch(_HOST_LABEL, label) for label in labels):
        raise configargparse.ArgumentTypeError(
            f"'{show_value(value)}' is not a host name (letters, digits and hyphens, no hyphen first or last)"
        )
    return host


def parse_bounded_integer(value: str, what: str, low: int, high: int | None = None) -> int:
    """Parse a whole number from low to high (no upper bound without one); what names it in the complaint."""
    try:
        number = int(value)
    except ValueError:
        raise configargparse.ArgumentTypeError(f"{value!r} is not {what}") from None
    if high is None and number < low:
        raise configargparse.ArgumentTypeError(f"{number} is less than {low}")
    if high is not None and not low <= number <= high:
        raise configargparse.ArgumentTypeError(f"{number} is outside {low}..{high}")
    return number


def port_number(value: str) -> int:
    """Parse a TCP port for argparse."""
    return parse_bounded_integer(value, "a port number", MIN_PORT, MAX_PORT)


def positive_seconds(value: str) -> float:
    """Parse a positive number of seconds for argparse."""
    try:
        seconds = float(value)
    except ValueError:
        raise configargparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise configargparse.ArgumentTypeError(f"{value} must be more than 0")
    if seconds == float("inf"):  # a wait without an end is no timeout: every wait has one
        raise configargparse.ArgumentTypeError(f"{value} is no number of seconds a wait can end after")
    if seconds < MIN_TIMEOUT_SECONDS:
        raise configargparse.ArgumentTypeError(f"{value} is too short to ever work (at least {MIN_TIMEOUT_SECONDS:g})")
    return seconds


def non_negative_seconds(value: str) -> float:
    """Parse a number of seconds for argparse, where 0 turns the thing off."""
    try:
        seconds = float(value)
    except ValueError:
        raise configargparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise configargparse.ArgumentTypeError(f"{value} must be 0 (off) or more")
    if 0 < seconds < MIN_TIMEOUT_SECONDS:
        raise configargparse.ArgumentTypeError(f"{value} is too short to ever work (0 is off)")
    return seconds


def full_path(value: str, cwd: Path | None = None) -> Path:
    """Return the path a relative value names from the current directory, so messages show it whole."""
    from pathlib import Path  # here: pathlib (with urllib.parse and ipaddress) is too slow for --help

    return (Path.cwd() if cwd is None else cwd) / value


def read_dotenv(path: str) -> dict[str, str]:
    """Return the variables set in a .env file; a line that is not UTF-8 is skipped with a warning."""
    # os.path, not pathlib: this runs before --help is handled, and pathlib is slow to import
    if not os.path.isfile(path):  # none, or a folder such as a virtual environment named .env
        return {}
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise FileError(f"cannot read {path}: {describe_error(error)}; fix its permissions or remove it") from error
    lines = []
    skipped = []
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode("utf-8-sig" if number == 1 else ENCODING))
        except UnicodeDecodeError:
            skipped.append(number)
            lines.append("\n")  # keeps the numbers of the lines after it, which python-dotenv reports
    if skipped:
        # One line however many: a file that is not text at all (a binary saved as .env) has thousands.
        logger.warning("skipping %s of %s: not UTF-8 text; save the file as UTF-8", describe_lines(skipped), path)
    from dotenv import dotenv_values  # here: most runs have no .env

    stream = io.StringIO("".join(lines))
    # Verbatim, as documented: no ${VAR} expansion. In a file that is not text, what decodes is no
    # settings either: python-dotenv's complaint about each such line would only repeat ours.
    with muted_logger("dotenv.main", muted=bool(skipped)):
        values = dotenv_values(stream=stream, interpolate=False)
    return {key: value for key, value in values.items() if value}


SHOWN_LINE_NUMBERS = 5


def describe_lines(numbers: Sequence[int]) -> str:
    """Name lines by number for a message: 'line 3', 'lines 1 and 3', '7,567 lines (1, 2, 3, 5, 8, ...)'."""
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    if len(numbers) == 2:
        return f"lines {numbers[0]} and {numbers[1]}"
    shown = ", ".join(str(number) for number in numbers[:SHOWN_LINE_NUMBERS])
    more = ", ..." if len(numbers) > SHOWN_LINE_NUMBERS else ""
    return f"{len(numbers):,} lines ({shown}{more})"


@contextmanager
def muted_logger(name: str, muted: bool) -> Iterator[None]:
    """Within the block, drop the records of a logger if muted."""
    log = logging.getLogger(name)
    if not muted:
        yield
        return
    previous, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = previous


def load_environment(environ: Mapping[str, str], cwd: str | os.PathLike[str]) -> dict[str, Setting]:
    """Return the environment layered over the .env of cwd (the environment wins), by unprefixed name.

    The environment gives only the names with ENV_PREFIX; .env gives both spellings, and of a name
    spelled both ways there the prefixed one. An empty value is unset.
    """
    dotenv_path = os.path.join(cwd, DOTENV_NAME)
    dotenv = read_dotenv(dotenv_path)
    merged = {}
    for key in sorted(dotenv, key=lambda key: key.startswith(ENV_PREFIX)):  # the prefixed ones last, to win
        merged[key.removeprefix(ENV_PREFIX)] = Setting(dotenv[key], str(dotenv_path), key)
    for key, value in environ.items():
        if value and key.startswith(ENV_PREFIX):
            merged[key.removeprefix(ENV_PREFIX)] = Setting(value, ENVIRONMENT_SOURCE, key)
    return merged


def make_parser(
    description: str, port_env: str, port_default: int, port_help: str, verbose_help: str
) -> configargparse.ArgumentParser:
    """Return a parser with the options both clients share."""
    parser = ChatArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
        default_config_files=[],
        add_env_var_help=False,
        allow_abbrev=False,
        epilog=(
            f"Every option can also be set in the environment, as the variable named with it (all begin "
            f"with {ENV_PREFIX}), or in a .env file in the current directory, where the {ENV_PREFIX} may be "
            "left out (HOST=, TOKEN=); the command line wins over the environment, the environment over "
            ".env. An empty value counts as unset."
        ),
    )
    parser.add_argument("--host", env_var="HOST", default=DEFAULT_HOST, type=host_name, help="chat server host")
    parser.add_argument("--port", env_var=port_env, default=port_default, type=port_number, help=port_help)
    parser.add_argument(
        "--connect-timeout",
        "--connect_timeout",
        env_var="CONNECT_TIMEOUT",
        default=DEFAULT_CONNECT_TIMEOUT,
        type=positive_seconds,
        help="seconds to wait for a connection",
    )
    parser.add_argument("-v", "--verbose", env_var="VERBOSE", action="store_true", help=verbose_help)
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",  # no variable: one left in .env would hide every later run's notes
        help="say only warnings and errors on stderr",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="show the version and exit"
    )
    return parser


def check_variable(action: configargparse.Action, setting: Setting) -> str | None:
    """Return what is wrong with a variable's value for this option, or None if nothing is."""
    if action.nargs == 0:  # a flag
        if setting.value.lower() not in TRUE_WORDS + FALSE_WORDS:
            return f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}"
        return None
    if action.type is not None:
        values = split_list(setting.value) if isinstance(action, ListAction) else [setting.value]
        try:
            for value in values:
                action.type(value)
        except (configargparse.ArgumentTypeError, TypeError, ValueError) as error:
            return str(error)
    if action.choices is not None and setting.value not in action.choices:
        return f"expected one of {', '.join(action.choices)}"
    return None


def environment_values(
    parser: configargparse.ArgumentParser, argv: Sequence[str], settings: Mapping[str, Setting]
) -> dict[str, str]:
    """Check the variables that the command line leaves in force; return them as configargparse takes them."""
    values = {}
    for action in parser._actions:
        name = getattr(action, "env_var", None)
        setting = settings.get(name) if name else None
        if setting is None or configargparse.already_on_command_line(argv, action.option_strings, parser.prefix_chars):
            continue
        if isinstance(action, ListAction) and not split_list(setting.value):
            continue  # only commas and spaces: as unset as an empty value
        problem = check_variable(action, setting)
        if problem is not None:
            # Free text is not shown: it may be the token.
            shown = "" if action.type is text_value else f"={show_value(setting.value)}"
            parser.error(f"{setting.name}{shown} (from {setting.source}): {problem}")
        value = setting.value
        if isinstance(action, ListAction):
            # The variable's list, item by item: configargparse would split "[a, b]" its own way.
            value = json.dumps(split_list(value))
        elif isinstance(action, argparse._AppendAction):
            # One variable is one value, verbatim: configargparse would split "[a, b]" into a list.
            value = json.dumps([value])
        values[name] = value
    return values


def parse_arguments(
    parser: configargparse.ArgumentParser,
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> configargparse.Namespace:
    """Parse argv over the environment and .env; usage errors exit through parser.error."""
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd  # not Path.cwd(): --help never needs pathlib
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_environment(environ, cwd)
    except FileError as error:
        parser.error(str(error))
    args = parser.parse_args(arguments, env_vars=environment_values(parser, arguments, settings))
    settle_verbosity(parser, args, arguments)
    return args


def settle_verbosity(
    parser: configargparse.ArgumentParser, args: configargparse.Namespace, argv: Sequence[str]
) -> None:
    """Refuse -q with -v; a VERBOSE from the environment or .env gives way to -q."""
    if not (getattr(args, "quiet", False) and args.verbose):
        return
    if configargparse.already_on_command_line(argv, ["-v", "--verbose"], parser.prefix_chars):
        parser.error("-q/--quiet and -v/--verbose ask for opposite things; give one of them")
    args.verbose = False


# Fields a history path may hold: those of the C standard, which every platform's strftime knows.
# %f is left out: it would start a new file for every chunk received.
# Not %x: its slashes (11/28/26) would make folders of a date.
PATH_FIELDS = frozenset("aAbBcdHIjmMpSUwWXyYzZGuV")


def log_path_value(value: str) -> str:
    """Parse --log_path for argparse: a file's name in UTF-8 without control characters; its strftime fields checked."""
    from _minechat.stamping import split_strftime  # here: the sender never needs the reader's stamping

    if not value.strip():
        raise configargparse.ArgumentTypeError("it names no file")
    if is_undecodable(value):
        raise configargparse.ArgumentTypeError("not valid UTF-8 text")
    if sanitize_text(value) != value:
        # A line break in the name would forge a line in every note that names the file.
        raise configargparse.ArgumentTypeError("it holds control characters or line breaks")
    if value.endswith(tuple(separator for separator in (os.sep, os.altsep, "/") if separator)):
        raise configargparse.ArgumentTypeError(
            "it ends with a folder separator; name the file too (logs/%Y/chat.txt, not logs/%Y/)"
        )

    try:
        parts = split_strftime(value)
    except ValueError as error:
        raise configargparse.ArgumentTypeError(str(error)) from None
    unknown = sorted({text for text, is_field in parts if is_field and text not in PATH_FIELDS})
    if unknown:
        fields = ", ".join(f"%{field}" for field in unknown)
        raise configargparse.ArgumentTypeError(f"{fields} is no date or time field; a literal % is written %%")
    return value


# A strftime field: % and a letter, after one of glibc's flags (%-d) or Python's own %:z.
_STRFTIME_FIELD = re.compile(r"%([-_0^#:]?.)", re.DOTALL)


def unknown_strftime_fields(value: str, moment: datetime) -> list[str]:
    """Return the fields of a strftime format that strftime leaves as they are (glibc) or as a bare letter (BSD)."""
    unknown = []
    for field in _STRFTIME_FIELD.findall(value):
        if field == "%":
            continue
        shown = moment.strftime("%" + field)
        if shown == "%" + field or (shown == field and field != "Z"):  # %Z: a zone may be named Z
            unknown.append("%" + field)
    return list(dict.fromkeys(unknown))


def time_format_value(value: str) -> str:
    """Parse --time-format for argparse: a strftime format that gives a stamp on one line."""
    text_value(value)
    if "\0" in value:  # strftime would stop there, silently
        raise configargparse.ArgumentTypeError("it holds a NUL character")
    if re.search(r"(?<!%)(%%)*%$", value):
        raise configargparse.ArgumentTypeError("it ends with a lone %; a literal % is written %%")
    from datetime import datetime  # here: the sender never needs it

    moment = datetime.now().astimezone()
    try:
        unknown = unknown_strftime_fields(value, moment)
        sample = moment.strftime(value)
    except ValueError as error:  # Windows refuses unknown fields
        raise configargparse.ArgumentTypeError(f"not a strftime format: {error}") from None
    if unknown:
        fields = ", ".join(unknown)
        what = "is no strftime field" if len(unknown) == 1 else "are no strftime fields"
        raise configargparse.ArgumentTypeError(f"{fields} {what}; a literal % is written %%")
    if not sample.strip():
        raise configargparse.ArgumentTypeError("it gives an empty stamp")
    if sanitize_text(sample) != sample:
        raise configargparse.ArgumentTypeError("it gives a stamp with control characters or line breaks")
    return value


def backlog_count(value: str) -> int:
    """Parse --backlog for argparse: a number of lines, 0 or more."""
    return parse_bounded_integer(value, "a number of lines", 0)


def full_pattern(value: str, cwd: Path | None = None) -> Path:
    """Return the history path pattern a value names from the current directory (whose % stay literal)."""
    from pathlib import Path  # here: pathlib (with urllib.parse and ipaddress) is too slow for --help

    if Path(value).is_absolute():
        return Path(value)
    folder = str(Path.cwd() if cwd is None else cwd)
    return Path(folder.replace("%", "%%")) / value


class Moment(NamedTuple):
    """A moment given on the command line and how long it lasts: a whole day, or a minute."""

    start: datetime
    length: timedelta


# What --since and --until take, and how long the moment each names lasts, in minutes.
MOMENT_FORMATS = (("%Y-%m-%d", 24 * 60), ("%Y-%m-%d %H:%M", 1))


def moment_value(value: str) -> Moment:
    """Parse --since or --until for argparse: YYYY-MM-DD or YYYY-MM-DD HH:MM, local time."""
    from datetime import datetime, timedelta  # here: only the query modes need it

    for time_format, minutes in MOMENT_FORMATS:
        try:
            return Moment(datetime.strptime(value.strip(), time_format), timedelta(minutes=minutes))
        except ValueError:
            continue
    raise configargparse.ArgumentTypeError(f"'{show_value(value)}' is not YYYY-MM-DD or YYYY-MM-DD HH:MM")


def search_pattern(value: str) -> str:
    """Parse --search for argparse: a Python regular expression."""
    text_value(value)
    try:
        re.compile(value)
    except re.error as error:
        raise configargparse.ArgumentTypeError(f"'{show_value(value)}' is not a regular expression: {error}") from None
    return value


def context_count(value: str) -> int:
    """Parse --context for argparse: a number of lines, 0 or more."""
    return parse_bounded_integer(value, "a number of lines", 0)


def day_count(value: str) -> int:
    """Parse --keep-days for argparse: a number of days, 1 or more."""
    return parse_bounded_integer(value, "a number of days", 1)


# The --message that stands for the lines of stdin.
STDIN_MARK = "-"
