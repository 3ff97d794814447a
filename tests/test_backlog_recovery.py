"""The backlog after accidents: a long scan stopped by Ctrl-C, a rotated history, a NUL-filled tail, a cut record."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from conftest import POSIX_ONLY, WAIT, RecordingDelays, RecordingOut
from fake_server import FakeMinechatServer

import read_client
from read_client import ReaderSettings

# Notes only, so the backlog must read the whole file back to find no chat: a scan of seconds.
NOTE_LINE = b"[27.11.26 10:00] *** x\n"
NOTE_COUNT = 600_000
STOP_PROMISE = 1.0  # seconds from Ctrl-C to the end


@POSIX_ONLY
async def test_ctrl_c_during_a_long_backlog_scan_stops_within_a_second(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    path = tmp_path / "chat.log"
    path.write_bytes(NOTE_LINE * NOTE_COUNT)
    settings = ReaderSettings("127.0.0.1", server.read_port, path, WAIT, verbose=False, backlog=10)
    task = asyncio.create_task(read_client.run(settings, RecordingOut(), RecordingDelays()))
    await asyncio.sleep(0)  # let it start; the scan itself is what takes long
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)
    started = time.monotonic()
    code = await asyncio.wait_for(task, WAIT * 2)
    assert time.monotonic() - started < STOP_PROMISE
    assert code == 130
    assert server.reader_connections == 0
