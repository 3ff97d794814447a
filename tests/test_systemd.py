"""Reporting to systemd: notify datagrams on a real AF_UNIX socket, from the notifier and the reader; the unit."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    LINUX_ONLY,
    POSIX_ONLY,
    ROOT,
    START_WAIT,
    UNIT,
    WAIT,
    Listener,
    client_env,
    reader_process,
    received,
    stop_with_signal,
)

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from _minechat.shutdown import SignalCatcher, stop_signal_of
from _minechat.systemd import ServiceNotifier, parse_notify_address, parse_watchdog_period
from chat_io import EXIT_FILE, EXIT_LOCKED, EXIT_SIGNAL_BASE, EXIT_USAGE

needs_af_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX datagram sockets here")


WATCHDOG_USEC = 1_000_000


PINGS_TO_MEASURE = 5


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit_settings() -> dict[str, list[str]]:
    """Return every key of the unit file with its values, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


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


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/user/1000/systemd/notify", "/run/user/1000/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
        ("relative/notify", None),
        ("vsock:2:1234", None),
    ],
)
def test_notify_address(value: str | None, address: str | None) -> None:
    assert parse_notify_address(value) == address


@pytest.mark.parametrize(
    ("usec", "pid", "period"),
    [
        (None, None, None),
        ("", None, None),
        ("1000000", None, 1.0),
        ("30000000", "", 30.0),
        ("1000000", "4242", 1.0),
        ("1000000", "4243", None),  # meant for another process
        ("1000000", "pid", None),
        ("0", None, None),
        ("-1000000", None, None),
        ("1e6", None, None),
    ],
)
def test_watchdog_period(usec: str | None, pid: str | None, period: float | None) -> None:
    assert parse_watchdog_period(usec, pid, own_pid=4242) == period


def test_unset_variable_opens_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object) -> None:
        raise AssertionError("a socket was opened without NOTIFY_SOCKET")

    monkeypatch.setattr(socket, "socket", no_socket)
    with ServiceNotifier({"WATCHDOG_USEC": "1000000"}) as service:
        service.ready()
        service.status("connected")
    assert service.watchdog_period == 1.0


def test_messages_arrive_one_line_each(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
        service.ready()
        # Text from outside cannot add an assignment of its own.
        service.status("connection lost: evil\nREADY=1\x1b[2J")
    assert received(sock) == [b"READY=1", b"STATUS=connection lost: evil\\nREADY=1\\x1b[2J", b"STOPPING=1"]


@LINUX_ONLY
def test_abstract_socket_name() -> None:
    name = f"minechat-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        with ServiceNotifier({"NOTIFY_SOCKET": "@" + name}) as service:
            service.ready()
        assert received(sock) == [b"READY=1", b"STOPPING=1"]


@needs_af_unix
def test_missing_listener_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="_minechat.systemd")
    with ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}) as service:
        service.ready()
    assert "cannot notify the service manager" in caplog.text


def test_full_queue_never_blocks(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
        # Nobody reads: the receiving queue fills after a few datagrams, and sending goes on regardless.
        for number in range(1000):
            service.status(f"message {number}")
    assert 0 < len(received(sock)) < 1000


def test_no_af_unix_means_no_messages(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.delattr(socket, "AF_UNIX")  # as on Windows
    with ServiceNotifier({"NOTIFY_SOCKET": path}) as service:
        service.ready()
    assert received(sock) == []


async def test_watchdog_task_only_when_asked(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    for environ in ({"NOTIFY_SOCKET": path}, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000", "WATCHDOG_PID": "1"}):
        with ServiceNotifier(environ, pid=2) as service:
            before = asyncio.all_tasks()
            async with service.watchdog():
                assert asyncio.all_tasks() == before
    assert received(sock) == [b"STOPPING=1", b"STOPPING=1"]
    with ServiceNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}) as service:
        before = asyncio.all_tasks()
        async with service.watchdog():
            (pinger,) = asyncio.all_tasks() - before
            assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), WAIT) == b"WATCHDOG=1"
        assert pinger.done()


@pytest.mark.slow
@POSIX_ONLY
async def test_reader_reports_ready_status_watchdog_and_stopping(
    server: FakeMinechatServer, tmp_path: Path, notify_socket: tuple[socket.socket, str], listener: Listener
) -> None:
    address = f"127.0.0.1:{server.read_port}"
    connected = f"STATUS=connected to {address}"
    env = client_env() | {"NOTIFY_SOCKET": notify_socket[1], "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    async with reader_process(
        server, tmp_path / "chat.log", cwd=tmp_path, env=env, stdout=subprocess.DEVNULL
    ) as process:
        try:
            await listener.wait_until(lambda texts: connected in texts, START_WAIT)
            # A dropped connection shows as retrying, then connected again.
            await server.drop_readers()
            await listener.wait_until(lambda texts: texts.count(connected) == 2)
            await listener.wait_until(lambda texts: texts.count("WATCHDOG=1") >= PINGS_TO_MEASURE)
        finally:
            returncode = await stop_with_signal(process, signal.SIGTERM)
    await listener.wait_until(lambda texts: "STOPPING=1" in texts)
    stderr = (await process.stderr.read()).decode()
    assert returncode == -signal.SIGTERM, stderr
    texts = [text for text in listener.texts if text != "WATCHDOG=1"]
    assert texts[:3] == ["READY=1", f"STATUS=connecting to {address}", connected]
    assert texts[3].startswith("STATUS=connection lost: ") and " next try in " in texts[3]
    assert texts[4:] == [f"STATUS=connecting to {address}", connected, "STOPPING=1", "STATUS=stopped by SIGTERM"]
    pings = [when for when, text in listener.messages if text == "WATCHDOG=1"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    period = WATCHDOG_USEC / 1_000_000
    # The promise is at least two pings a period; one late ping must still beat the deadline.
    assert statistics.median(gaps) <= period / 2
    assert max(gaps) < period


def test_unit_matches_the_clients_exit_codes() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == ["%h/.local/bin/minechat-read"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["WatchdogSec"]
    final = {EXIT_USAGE, EXIT_FILE, EXIT_LOCKED}
    assert {int(code) for code in settings["RestartPreventExitStatus"][0].split()} == final
    # Stopped on purpose, the client dies by the signal, which systemd counts as a clean stop
    # (SIGHUP, SIGINT, SIGTERM and SIGPIPE, for any Type but oneshot): the unit says so by name.
    stops = {signal.Signals(signum).name for signum in SignalCatcher.SIGNALS}
    assert stops == {"SIGHUP", "SIGINT", "SIGTERM"}
    for signum in SignalCatcher.SIGNALS:
        assert stop_signal_of(EXIT_SIGNAL_BASE + signum) == signum
    assert set(settings["SuccessExitStatus"][0].split()) == stops
    assert settings["ReadWritePaths"] == settings["WorkingDirectory"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists and is executable: give a home of our own one.
    home = tmp_path / "home"
    command = home / ".local" / "bin" / "minechat-read"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n", encoding="utf-8")
    command.chmod(0o755)
    (home / "minechat").mkdir()
    runtime = tmp_path / "runtime"  # a user manager, even a pretend one, needs XDG_RUNTIME_DIR
    runtime.mkdir(mode=0o700)
    env = os.environ | {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "--user", "verify", str(UNIT)], env=env, capture_output=True, text=True, timeout=60
    )
    # Unknown keys and values it cannot parse are only warned about, with exit code 0: so no output at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_readme_shows_how_to_run_it_around_the_clock() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Run it around the clock") :]
    for command in (
        "contrib/minechat-read.service ~/.config/systemd/user/",
        "systemctl --user daemon-reload",
        "systemctl --user enable --now minechat-read",
        "journalctl --user -u minechat-read",
        "loginctl enable-linger",
    ):
        assert command in section
