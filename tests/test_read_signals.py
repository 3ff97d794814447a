"""read_client and signals: ignored ones stay ignored, and a stop at any moment of start-up is clean."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    ROOT,
    WAIT,
    client_env,
    default_signals,
    read_history,
    status_of,
    stop_with_signal,
    wait_for_file,
)

pytestmark = POSIX_ONLY
# How long a process must outlive a signal it ignores.
IGNORED_WAIT = 1.0

# Runs read_client.py as __main__, sending itself a signal when the named module is first imported:
# the stop lands in the middle of the imports, where a real Ctrl-C most often lands.
STOP_DURING_IMPORT = """
import os, runpy, sys
module, signum, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class StopOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            os.kill(os.getpid(), signum)
        return None

sys.meta_path.insert(0, StopOnImport())
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


def ignore(signum: int) -> None:
    """Ignore a signal in the child before it starts, as nohup does; the others at their defaults."""
    default_signals()
    signal.signal(signum, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
async def test_signal_ignored_at_start_stays_ignored(server: FakeMinechatServer, tmp_path: Path, signum: int) -> None:
    history = tmp_path / "chat.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "read_client.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.read_port),
        "--log_path",
        str(history),
        cwd=tmp_path,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: ignore(signum),
    )
    try:
        await wait_for_file(history, lambda data: b"*** connected to" in data, timeout=15)
        process.send_signal(signum)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), IGNORED_WAIT)
    finally:
        returncode = await stop_with_signal(process, signal.SIGTERM)
    assert returncode == -signal.SIGTERM
    assert status_of(read_history(history))[-1] == "*** stopped by SIGTERM"


@pytest.mark.parametrize("module", ["asyncio", "configargparse", "_minechat.history", "chat_io"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_stop_during_the_imports_is_clean(tmp_path: Path, module: str, signum: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STOP_DURING_IMPORT,
        module,
        str(int(signum)),
        str(ROOT / "read_client.py"),
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        cwd=tmp_path,
        env=client_env(PYTHONPATH=str(ROOT)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), WAIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == -signum, err.decode()
    assert b"Traceback" not in err
    assert not (tmp_path / "chat_logs.txt").exists()
