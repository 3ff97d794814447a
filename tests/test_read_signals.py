"""read_client and signals: ignored ones stay ignored, and a stop at any moment of start-up is clean."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    ROOT,
    START_WAIT,
    client_env,
    finish,
    read_history,
    reader_process,
    send_signal,
    start_client,
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


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
async def test_signal_ignored_at_start_stays_ignored(server: FakeMinechatServer, tmp_path: Path, signum: int) -> None:
    history = tmp_path / "chat.log"
    # Ignored before it starts, as nohup does; the others at their defaults.
    async with reader_process(server, history, cwd=tmp_path, stdout=subprocess.DEVNULL, ignored=(signum,)) as process:
        try:
            await wait_for_file(history, lambda data: b"*** connected to" in data, timeout=START_WAIT)
            send_signal(process, signum)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), IGNORED_WAIT)
        finally:
            returncode = await stop_with_signal(process, signal.SIGTERM)
    assert returncode == -signal.SIGTERM
    assert status_of(read_history(history))[-1] == "*** stopped by SIGTERM"


@pytest.mark.parametrize("module", ["asyncio", "configargparse", "_minechat.history", "chat_io"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_stop_during_the_imports_is_clean(tmp_path: Path, module: str, signum: int) -> None:
    process = await start_client(
        "read_client.py",
        port=9,
        cwd=tmp_path,
        env=client_env(PYTHONPATH=str(ROOT)),
        python=("-c", STOP_DURING_IMPORT, module, str(int(signum))),
    )
    code, err = await finish(process)
    assert code == -signum, err
    assert "Traceback" not in err
    assert not (tmp_path / "chat_logs.txt").exists()
