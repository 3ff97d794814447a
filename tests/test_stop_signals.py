"""Both clients and both installed commands die by the stop signal they got, at any moment of a run."""

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    POSIX_ONLY,
    ROOT,
    START_WAIT,
    STOP_WAIT,
    TOKEN,
    client_command,
    client_env,
    free_port,
    read_history,
    reader_process,
    spawn_options,
    status_of,
    stop_with_signal,
)

pytestmark = POSIX_ONLY

# What pip writes into an installed command (bin/minechat-read): it imports the target and calls it,
# so `if __name__ == "__main__"` in the script never runs.
CONSOLE_SCRIPT = """\
import re
import sys
from {module} import {function}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({function}())
"""
COMMANDS = {"minechat-read": "read_client.py", "minechat-send": "send_client.py"}
# The moments a stop is sent at, counted from the start of the process: all of start-up and a little more.
SWEEP_SECONDS = 0.2
SWEEP_RUNS = 6  # per entry point in CI; the 500-run measurement is sweep_start_up(..., runs=500)
PYTHON_FAILED = 1  # how Python ends when its own start-up fails


def installed_command(name: str) -> list[str]:
    """The command line of an installed command, as pip's wrapper runs it, for the target pyproject.toml names."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(rf'^{name} = "(\w+):(\w+)"$', text, re.MULTILINE)
    assert match, name
    return [sys.executable, "-c", CONSOLE_SCRIPT.format(module=match[1], function=match[2])]


def entry_command(entry: str, port: int) -> list[str]:
    """The command line of an entry point that runs until stopped: the reader, or the sender relaying stdin."""
    script = COMMANDS.get(entry, entry)
    command = [str(part) for part in client_command(script)] if entry == script else installed_command(entry)
    if script == "read_client.py":
        return [*command, "--host", "127.0.0.1", "--port", str(port)]
    address = ["--host", "127.0.0.1", "--port", str(port), "--read-port", str(port)]
    return [*command, *address, "--token", TOKEN, "--message", "-"]


@dataclass
class Sweep:
    """What stops sent at moments of start-up did."""

    runs: int = 0
    swallowed: list[float] = field(default_factory=list)  # moments of stops the process outlived
    other_ends: list[tuple[float, int | None, str]] = field(default_factory=list)  # not by the signal: stderr's end
    # Stops inside Python's own start-up, before a line of ours runs, which end it with its traceback,
    # or which it reports and then ignores ("Failed checking if argv[0] is an import path entry",
    # "Exception ignored in ... _get_module_lock"): outside a program's reach.
    in_python_start_up: list[float] = field(default_factory=list)
    lost_by_python: list[float] = field(default_factory=list)  # those of them that Python ignored
    project_tracebacks: list[str] = field(default_factory=list)  # naming a file of this project


def runs_project_code(traceback: str) -> bool:
    """Tell whether a traceback passes through a line of this project.

    Line 0 of a script is not one: Python compiles a script it runs before its first line, and a
    stop meanwhile is raised as the module starts, before any line of it runs.
    """
    lines = re.findall(rf'File "{re.escape(str(ROOT))}[^"]*", line (\d+)', traceback)
    return any(int(line) > 0 for line in lines)


def ignored_by_python(stderr: str) -> bool:
    """Tell whether Python reported a KeyboardInterrupt it ignored, in code of its own, not ours."""
    return "KeyboardInterrupt" in stderr and not runs_project_code(stderr)


def stop_once(command: list[str], cwd: Path, delay: float, signum: int, sweep: Sweep) -> None:
    """Start a command, send it signum delay seconds later, and note how it ended."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **spawn_options(cwd, client_env(PYTHONPATH=str(ROOT))),
    )
    try:
        time.sleep(delay)
        process.send_signal(signum)
        try:
            process.wait(timeout=STOP_WAIT)  # stdin stays open: the sender would end at its end
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            if ignored_by_python(err.decode(errors="replace")):
                sweep.in_python_start_up.append(delay)
                sweep.lost_by_python.append(delay)
            else:
                sweep.swallowed.append(delay)
            return
        _, err = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        sweep.runs += 1
    text = err.decode(errors="replace")
    if "Traceback" in text and runs_project_code(text):
        sweep.project_tracebacks.append(text)
    elif process.returncode == PYTHON_FAILED and ("Traceback" in text or "KeyboardInterrupt" in text):
        sweep.in_python_start_up.append(delay)  # Python's own start-up reported the stop and gave up
    elif process.returncode != -signum:
        sweep.other_ends.append((delay, process.returncode, text[-400:]))


def sweep_start_up(entry: str, cwd: Path, runs: int, seed: int = 0) -> Sweep:
    """Stop an entry point runs times, SIGINT and SIGTERM in turn, at moments spread over SWEEP_SECONDS."""
    chance = random.Random(seed)
    sweep = Sweep()
    port = free_port()  # nothing listens: the clients keep trying it, and run on
    for run in range(runs):
        delay = (run + chance.random()) * SWEEP_SECONDS / runs
        signum = (signal.SIGINT, signal.SIGTERM)[run % 2]
        stop_once(entry_command(entry, port), cwd, delay, signum, sweep)
    return sweep


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["read_client.py", "send_client.py", "minechat-read", "minechat-send"])
def test_a_stop_at_any_moment_of_start_up_ends_the_process_by_it(entry: str, tmp_path: Path) -> None:
    sweep = sweep_start_up(entry, tmp_path, SWEEP_RUNS, seed=len(entry))
    assert sweep.runs == SWEEP_RUNS
    assert sweep.swallowed == []
    assert sweep.other_ends == []
    assert sweep.project_tracebacks == []


def shell_command(server: FakeMinechatServer, script: str) -> list[str]:
    """The command line of a client that runs until stopped: the reader, or the sender relaying stdin."""
    if script == "read_client.py":
        return [str(part) for part in client_command(script, port=server.read_port)]
    command = entry_command(script, server.write_port)
    command[command.index("--read-port") + 1] = str(server.read_port)
    return command


async def start_in_shell(server: FakeMinechatServer, script: str, cwd: Path, after: str) -> asyncio.subprocess.Process:
    """Run a client from a shell script that goes on with `after`, in a process group of its own."""
    return await asyncio.create_subprocess_exec(
        "bash",  # bash, not sh: it waits for a child that Ctrl-C stopped, and goes on unless the child died by it
        "-c",
        f'"$@"; {after}',
        "bash",
        *shell_command(server, script),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **spawn_options(cwd, None),
    )


async def post_a_line(server: FakeMinechatServer, sender: asyncio.subprocess.Process) -> None:
    """Give a sender that relays stdin a line, and wait until the server has taken the post."""
    assert sender.stdin is not None
    sender.stdin.write(b"hello\n")
    await sender.stdin.drain()
    await server.wait_until(lambda: [post.lines for post in server.posts] == [["hello"]], timeout=START_WAIT)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["read_client.py", "send_client.py"])
async def test_ctrl_c_stops_the_shell_script_around_a_client(
    server: FakeMinechatServer, tmp_path: Path, script: str
) -> None:
    server.add_account("Eve", TOKEN)
    shell = await start_in_shell(server, script, tmp_path, "echo after")
    try:
        if script == "read_client.py":
            await server.wait_until(lambda: len(server.readers) == 1, timeout=START_WAIT)
        else:
            await post_a_line(server, shell)
        os.killpg(shell.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
        out, err = await asyncio.wait_for(shell.communicate(), STOP_WAIT)
    finally:
        if shell.returncode is None:
            os.killpg(shell.pid, signal.SIGKILL)
            await shell.wait()
    assert b"after" not in out, err.decode()
    assert shell.returncode == -signal.SIGINT


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_the_reader_dies_by_the_signal_after_its_note(
    server: FakeMinechatServer, tmp_path: Path, signum: int
) -> None:
    async with reader_process(server, tmp_path / "chat.log", stdout=subprocess.DEVNULL) as process:
        assert await stop_with_signal(process, signum) == -signum
    assert status_of(read_history(tmp_path / "chat.log"))[-1] == f"*** stopped by {signal.Signals(signum).name}"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_the_sender_dies_by_the_signal_after_its_report(
    server: FakeMinechatServer, tmp_path: Path, signum: int
) -> None:
    server.add_account("Eve", TOKEN)
    command = entry_command("send_client.py", server.write_port)
    command[command.index("--read-port") + 1] = str(server.read_port)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **spawn_options(tmp_path, None),
    )
    assert process.stderr is not None
    await post_a_line(server, process)
    assert await stop_with_signal(process, signum) == -signum
    err = (await process.stderr.read()).decode()
    assert "interrupted: " in err, err
