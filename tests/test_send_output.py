"""No output failure gives a traceback: a full or closed stdout or stderr ends in one line and an exit code."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import LINUX_ONLY, POSIX_ONLY, START_WAIT, TOKEN, client_process

from chat_io import EXIT_FILE, EXIT_OK

pytestmark = pytest.mark.usefixtures("account")  # conftest's: Focused Loyd, with TOKEN


async def check_into(server: FakeMinechatServer, tmp_path: Path, stdout: object) -> tuple[int, str]:
    """Run --check with stdout going where given; return its exit code and stderr."""
    async with client_process(
        "send_client.py", "--check", "--token", TOKEN, port=server.write_port, cwd=tmp_path, stdout=stdout
    ) as process:
        _, err = await asyncio.wait_for(process.communicate(), START_WAIT)
    assert process.returncode is not None
    return process.returncode, err.decode()


@LINUX_ONLY
async def test_check_into_a_full_stdout_says_so_in_one_line(server: FakeMinechatServer, tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        code, err = await check_into(server, tmp_path, full)
    assert code == EXIT_FILE
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip().splitlines()[-1].endswith(" ERROR cannot print the nickname: stdout is full or closed")


@POSIX_ONLY
async def test_check_into_a_pipe_nobody_reads_ends_without_a_traceback(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `send_client.py --check | true`, once true has gone
    try:
        code, err = await check_into(server, tmp_path, write_end)
    finally:
        os.close(write_end)
    assert code == EXIT_FILE
    assert "Traceback" not in err and "Exception ignored" not in err


@LINUX_ONLY
@pytest.mark.parametrize("stderr", ["full", "closed pipe"])
async def test_a_typed_stream_with_a_dead_stderr_posts_and_ends_without_a_traceback(
    server: FakeMinechatServer, tmp_path: Path, stderr: str
) -> None:
    controller, terminal = pty.openpty()
    read_end, write_end = os.pipe()
    os.close(read_end)
    target = open("/dev/full", "wb") if stderr == "full" else os.fdopen(write_end, "wb")  # noqa: SIM115
    try:
        async with client_process(
            "send_client.py", "--token", TOKEN, "--message", "-",
            port=server.write_port, cwd=tmp_path, stdin=terminal, stdout=subprocess.PIPE, stderr=target,
        ) as process:  # fmt: skip
            os.close(terminal)
            os.write(controller, b"one\n")
            await server.wait_until(lambda: any(post.acknowledged for post in server.posts), timeout=START_WAIT)
            os.write(controller, b"two\n\x04")  # then Ctrl-D
            await asyncio.wait_for(process.wait(), START_WAIT)
    finally:
        os.close(controller)
        target.close()
        if stderr == "full":
            os.close(write_end)
    assert process.returncode == EXIT_OK
    assert [post.lines for post in server.posts] == [["one"], ["two"]]
