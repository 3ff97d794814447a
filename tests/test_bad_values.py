"""Values that can never work are refused up front (exit 2, one line), not retried forever."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_reader


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--host", "a b"], "--host"),
        (["--host", "-1"], "--host"),
        (["--host", "chat.example.com-"], "--host"),
        (["--host", "ex ample.com"], "--host"),
        (["--connect-timeout", "1e-300"], "--connect-timeout"),
        (["--idle-timeout", "1e-300"], "--idle-timeout"),
        (["--connect-timeout", "inf"], "--connect-timeout"),
        (["--idle-timeout", "inf"], "--idle-timeout"),
    ],
)
def test_value_that_can_never_work_is_refused(tmp_path: Path, argv: list[str], option: str) -> None:
    result = run_reader(tmp_path, *argv)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert option in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("host", ["minechat.dvmn.org.", "my_host.local", "xn--80ak6aa92e.com", "пример.рф", "::1"])
def test_hosts_that_can_work_are_taken(host: str, tmp_path: Path) -> None:
    import read_client

    assert read_client.parse_settings(["--host", host], {}, tmp_path).host == host


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400"])
def test_a_timeout_that_never_ends_is_refused(value: str) -> None:
    import send_client

    with pytest.raises(SystemExit) as stop:
        send_client.parse_settings(["--token", "t", "--reply-timeout", value], {}, Path.cwd())
    assert stop.value.code == 2
