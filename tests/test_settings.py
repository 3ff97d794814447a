"""The shared settings machinery: .env files, the environment, host names, port numbers and the parsers."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import configargparse
import pytest
from helpers import refuse_to_open

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from _minechat.settings import MAX_PORT, Setting, host_name, load_environment, port_number, text_value
from chat_io import FileError


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('HOST="from-dotenv"\nTOKEN=abc\nEMPTY\n')
    merged = load_environment({"MINECHAT_HOST": "from-env"}, tmp_path)
    assert merged["HOST"] == Setting("from-env", "the environment", "MINECHAT_HOST")
    assert merged["TOKEN"] == Setting("abc", str(tmp_path / ".env"), "TOKEN")
    assert "EMPTY" not in merged


def test_no_dotenv_is_fine(tmp_path: Path) -> None:
    assert load_environment({"MINECHAT_A": "1"}, tmp_path) == {"A": Setting("1", "the environment", "MINECHAT_A")}


def test_empty_values_are_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOST=\nNICKNAME=''\nTOKEN=abc\n")
    merged = load_environment({"MINECHAT_TOKEN": "", "MINECHAT_MESSAGE": ""}, tmp_path)
    assert merged == {"TOKEN": Setting("abc", str(tmp_path / ".env"), "TOKEN")}


def test_dotenv_lines_not_utf8_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A comment and a value saved in cp1251, and a UTF-8 byte-order mark as Notepad writes it.
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbf# \xcf\xf0\xe8\nHOST=h.example\nNICKNAME=\xc5\xe2\xe0\nTOKEN=abc\n")
    merged = load_environment({}, tmp_path)
    assert {key: setting.value for key, setting in merged.items()} == {"HOST": "h.example", "TOKEN": "abc"}
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [f"skipping lines 1 and 3 of {tmp_path / '.env'}: not UTF-8 text; save the file as UTF-8"]


def test_a_folder_named_dotenv_is_not_read(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()  # a virtual environment, say
    assert load_environment({}, tmp_path) == {}


def test_unreadable_dotenv_is_a_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("HOST=h.example\n")
    refuse_to_open(monkeypatch, ".env")
    with pytest.raises(FileError, match=f"cannot read {re.escape(str(tmp_path / '.env'))}: Permission denied"):
        load_environment({}, tmp_path)


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("minechat.dvmn.org", "minechat.dvmn.org"),
        ("minechat.dvmn.org.", "minechat.dvmn.org."),
        (" localhost ", "localhost"),
        ("пример.рф", "пример.рф"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("a" * 63 + ".org", "a" * 63 + ".org"),
    ],
)
def test_host_name_accepts(value: str, host: str) -> None:
    assert host_name(value) == host


@pytest.mark.parametrize(
    "value",
    ["minechat..dvmn.org", ".minechat.dvmn.org", "a" * 64 + ".org", "", " ", "[minechat.dvmn.org]", "[::1", "h\udcff"],
)
def test_host_name_refuses(value: str) -> None:
    with pytest.raises(configargparse.ArgumentTypeError):
        host_name(value)


def test_text_value_refuses_undecodable_bytes() -> None:
    assert text_value("café") == "café"
    with pytest.raises(configargparse.ArgumentTypeError, match="not valid UTF-8 text"):
        text_value("caf\udce9")


@pytest.mark.parametrize("value", ["1", "5000", "65535", " 65535 "])
def test_port_number_accepts_the_whole_range(value: str) -> None:
    assert port_number(value) == int(value)
    assert MAX_PORT == 65535


@pytest.mark.parametrize(
    ("value", "complaint"), [("0", "0 is outside 1..65535"), ("65536", "65536 is outside 1..65535")]
)
def test_port_number_refuses_outside_the_range(value: str, complaint: str) -> None:
    with pytest.raises(configargparse.ArgumentTypeError, match=f"^{complaint}$"):
        port_number(value)


def test_help_shows_description_epilog_variables_and_defaults() -> None:
    parser = _minechat.settings.make_parser("Do a thing.", "SOME_PORT", 7, "port of things", "say more")
    parser.add_argument("--flag", env_var="FLAG", action="store_true", help="a flag")
    parser.add_argument("--given", env_var="GIVEN", default="g", help="shown (default: elsewhere)")
    text = " ".join(parser.format_help().split())
    assert "Do a thing." in text
    assert (
        "Every option can also be set in the environment, as the variable named with it (all begin with "
        "MINECHAT_), or in a .env file in the current directory, where the MINECHAT_ may be left out (HOST=, "
        "TOKEN=); the command line wins over the environment, the environment over .env. An empty value "
        "counts as unset."
    ) in text
    assert "port of things [env var: MINECHAT_SOME_PORT] (default: 7)" in text
    assert "a flag [env var: MINECHAT_FLAG]" in text and "a flag [env var: MINECHAT_FLAG] (default" not in text
    assert "shown (default: elsewhere) [env var: MINECHAT_GIVEN]" in text and "(default: g)" not in text
    assert "-h, --help show this help message and exit" in text
    assert text == " ".join(parser.format_help().split())  # asking twice adds nothing


def test_parser_spellings(tmp_path: Path) -> None:
    parser = _minechat.settings.make_parser("d", "SOME_PORT", 7, "p", "v")
    args = _minechat.settings.parse_arguments(parser, ["-v", "--connect_timeout", "2"], {}, tmp_path)
    assert args.verbose is True and args.connect_timeout == 2.0
    args = _minechat.settings.parse_arguments(parser, ["--connect-timeout", "3"], {}, tmp_path)
    assert args.verbose is False and args.connect_timeout == 3.0


def test_parse_arguments_reads_the_command_line_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["prog", "--port", "7001"])
    parser = _minechat.settings.make_parser("d", "SOME_PORT", 7, "p", "v")
    assert _minechat.settings.parse_arguments(parser, None, {}, tmp_path).port == 7001


@pytest.mark.parametrize(("value", "complaint"), [("x", "'x' is not a port number"), ("", "'' is not a port number")])
def test_port_number_names_what_is_not_a_number(value: str, complaint: str) -> None:
    with pytest.raises(configargparse.ArgumentTypeError, match=f"^{complaint}$"):
        port_number(value)


def test_dotenv_byte_order_mark_only_on_the_first_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbfHOST=h.example\nNICKNAME=\xef\xbb\xbfEve\n")
    merged = _minechat.settings.load_environment({}, tmp_path)
    assert merged["HOST"].value == "h.example"
    assert merged["NICKNAME"].value == "\ufeffEve"  # kept: only a file starts with a byte-order mark


def test_host_name_complaints() -> None:
    with pytest.raises(configargparse.ArgumentTypeError, match=r"^not valid UTF-8 text$"):
        _minechat.settings.host_name("h\udcff")
    with pytest.raises(configargparse.ArgumentTypeError, match="only an IPv6 address goes in brackets"):
        _minechat.settings.host_name("[127.0.0.1]")
    with pytest.raises(configargparse.ArgumentTypeError, match="only an IPv6 address goes in brackets"):
        _minechat.settings.host_name("::1]")
    assert _minechat.settings.host_name("EXAMPLE.org") == "EXAMPLE.org"
    assert _minechat.settings.is_ip_address("127.0.0.1") and not _minechat.settings.is_ip_address(
        "127.0.0.1", version=6
    )


def test_dotenv_byte_order_mark_counts_only_at_the_start_of_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"HOST=h.example\n\xef\xbb\xbfNICKNAME=Eve\n")
    assert set(_minechat.settings.load_environment({}, tmp_path)) == {"HOST", "\ufeffNICKNAME"}
