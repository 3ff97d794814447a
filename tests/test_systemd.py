"""Reporting to systemd: notify datagrams on a real AF_UNIX socket, from the notifier and the reader; the unit."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
from helpers import needs_af_unix

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd


def test_odd_notify_socket_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="_minechat.systemd")
    assert _minechat.systemd.parse_notify_address("vsock:2:1") is None
    assert [record.getMessage() for record in caplog.records] == [
        "NOTIFY_SOCKET 'vsock:2:1' is neither a path nor an abstract name; not notifying"
    ]


@needs_af_unix
def test_notifier_failures_are_logged_with_their_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="_minechat.systemd")
    with _minechat.systemd.ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}) as service:
        service.ready()
    assert caplog.records[0].getMessage() == ("cannot notify the service manager: No such file or directory")
    caplog.clear()

    def no_socket(*args: object) -> socket.socket:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(socket, "socket", no_socket)
    with _minechat.systemd.ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}) as service:
        service.ready()
    assert [record.getMessage() for record in caplog.records] == [
        "cannot open a socket to the service manager: Too many open files"
    ]


@needs_af_unix
def test_notifier_sends_assignments_in_one_datagram_and_long_statuses(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        with _minechat.systemd.ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
            service.notify("A=1", "B=2")
            service.status("s" * 150)
        assert sock.recv(1024) == b"A=1\nB=2"
        assert sock.recv(1024) == b"STATUS=" + b"s" * 150


def test_notifier_watchdog_is_for_this_process_by_default() -> None:
    environ = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert _minechat.systemd.ServiceNotifier(environ).watchdog_period == 3.0
    assert _minechat.systemd.ServiceNotifier(environ, pid=os.getpid() + 1).watchdog_period is None
