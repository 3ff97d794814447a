"""The shared settings machinery: .env files, the environment, host names, port numbers and the parsers."""

from __future__ import annotations

import re
from pathlib import Path

import configargparse
import pytest

from _minechat.settings import Setting, host_name, load_environment, text_value
from chat_io import FileError


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('HOST="from-dotenv"\nTOKEN=abc\nEMPTY\n')
    merged = load_environment({"HOST": "from-env"}, tmp_path)
    assert merged["HOST"] == Setting("from-env", "the environment")
    assert merged["TOKEN"] == Setting("abc", str(tmp_path / ".env"))
    assert "EMPTY" not in merged


def test_no_dotenv_is_fine(tmp_path: Path) -> None:
    assert load_environment({"A": "1"}, tmp_path) == {"A": Setting("1", "the environment")}


def test_empty_values_are_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOST=\nNICKNAME=''\nTOKEN=abc\n")
    merged = load_environment({"TOKEN": "", "MESSAGE": ""}, tmp_path)
    assert merged == {"TOKEN": Setting("abc", str(tmp_path / ".env"))}


def test_dotenv_lines_not_utf8_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A comment and a value saved in cp1251, and a UTF-8 byte-order mark as Notepad writes it.
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbf# \xcf\xf0\xe8\nHOST=h.example\nNICKNAME=\xc5\xe2\xe0\nTOKEN=abc\n")
    merged = load_environment({}, tmp_path)
    assert {key: setting.value for key, setting in merged.items()} == {"HOST": "h.example", "TOKEN": "abc"}
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"skipping line {number} of {tmp_path / '.env'}: it is not UTF-8 text; save the file as UTF-8"
        for number in (1, 3)
    ]


def test_a_folder_named_dotenv_is_not_read(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()  # a virtual environment, say
    assert load_environment({}, tmp_path) == {}


def test_unreadable_dotenv_is_a_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("HOST=h.example\n")

    def refuse(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
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
