"""Start-up: `--help` of each client loads no module that only some runs need (bench/bench_startup.py times it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import client_env, run_client_sync

# Modules a --help must not load: each costs milliseconds at every start, and only some runs use
# them (pathlib pulls urllib.parse and ipaddress; random is for the reconnect jitter).
DEFERRED = {
    "pathlib",
    "random",
    "urllib.parse",
    "ipaddress",
    "datetime",
    "tempfile",
    "dotenv",
    "aiofiles",
    "_minechat.posting",
    "_minechat.witness",
    "_minechat.dialogue",
    "_minechat.outbox",
    "_minechat.reply_clock",
    "_minechat.history",
    "_minechat.recorder",
    "_minechat.tail",
    "_minechat.backlog",
    "_minechat.archive",
    "_minechat.sender_settings",
}
# A line of -X importtime's report on stderr: "import time: self | cumulative | <indent>name".
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")
# What the floor itself loads, so the test holds on a Python whose asyncio or configargparse needs one of them.
FLOOR = "import asyncio, configargparse"


def imported_modules(stderr: str) -> set[str]:
    """Return the names of the modules an -X importtime report shows being loaded."""
    return {match[1] for match in IMPORT_LINE.finditer(stderr)}


@pytest.fixture(scope="module")
def floor() -> set[str]:
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", FLOOR], capture_output=True, text=True, check=True, env=client_env()
    )
    return imported_modules(process.stderr)


# The sender's own modules, which the reader never needs.
SENDER_ONLY = {"_minechat.token_file"}


@pytest.mark.parametrize(("script", "unneeded"), [("read_client.py", SENDER_ONLY), ("send_client.py", set())])
def test_help_loads_only_what_every_run_needs(script: str, unneeded: set[str], floor: set[str], tmp_path: Path) -> None:
    result = run_client_sync(script, "--help", cwd=tmp_path, python=("-X", "importtime"))
    assert result.returncode == 0
    assert result.stdout.startswith("usage:")
    loaded = imported_modules(result.stderr)
    assert {"configargparse", "chat_io", "_minechat.settings"} <= loaded  # the report is read right
    assert sorted((loaded - floor) & (DEFERRED | unneeded)) == []
