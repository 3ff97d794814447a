"""read_client's command line: settings and their sources, usage errors, --help, main() and the process."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ISO_FORMAT

import read_client


def test_options_from_the_environment_and_the_command_line(tmp_path: Path) -> None:
    environ = {"TIME_FORMAT": ISO_FORMAT, "FORMAT": "jsonl", "BACKLOG": "0", "LOG_PATH": "logs/%Y/%m-%d.txt"}
    settings = read_client.parse_settings([], environ, tmp_path)
    assert (settings.time_format, settings.history_format, settings.backlog) == (ISO_FORMAT, "jsonl", 0)
    assert settings.log_path == tmp_path / "logs/%Y/%m-%d.txt"
    argv = ["--time-format", "%H:%M:%S", "--format", "text", "--backlog", "3"]
    settings = read_client.parse_settings(argv, environ, tmp_path)
    assert (settings.time_format, settings.history_format, settings.backlog) == ("%H:%M:%S", "text", 3)
    defaults = read_client.parse_settings([], {}, tmp_path)
    assert (defaults.time_format, defaults.history_format, defaults.backlog) == ("[%d.%m.%y %H:%M]", "text", 10)


@pytest.mark.parametrize(
    ("environ", "complaint"),
    [
        ({"FORMAT": "xml"}, "FORMAT=xml (from the environment): expected one of text, jsonl"),
        ({"BACKLOG": "-1"}, "BACKLOG=-1 (from the environment): -1 is less than 0"),
        ({"BACKLOG": "many"}, "BACKLOG=many (from the environment): 'many' is not a number of lines"),
        ({"TIME_FORMAT": "%H\n%M"}, "TIME_FORMAT=%H\\n%M (from the environment): it gives a stamp with control"),
        ({"LOG_PATH": "50%.log"}, "LOG_PATH=50%.log (from the environment): %. is no date or time field"),
    ],
)
def test_bad_values_name_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], environ, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert len(err.splitlines()) == 1


def test_a_time_format_with_a_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        read_client.parse_settings([], {"TIME_FORMAT": "%H:%M\x00 %d.%m.%y"}, tmp_path)
    assert stop.value.code == 2
