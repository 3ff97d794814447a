"""Measure send_client posting a stream from stdin beside nc pushing the same dialogue.

Both talk to the bundled fake server on loopback, which counts the posts it takes. nc is the
floor: it sends the token and every message blindly, without reading a reply. send_client
reads every acknowledgement and matches it to its post. Target: within 1.5x of nc at 50,000
messages; at 10,000 start-up is a third of the time and the ratio is reported only (see TARGETS).

    python bench/bench_send.py [--messages 10000 --messages 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_server import FakeMinechatServer  # noqa: E402

WAIT_SECONDS = 120.0


def make_messages(count: int) -> list[str]:
    return [f"message {number} — сообщение номер {number}" for number in range(count)]


async def time_until_posted(
    server: FakeMinechatServer, command: list[str], stdin: Path, count: int
) -> tuple[float, float | None]:
    """Run command with stdin from a file; return seconds until the server took count posts, and until exit."""
    already = len(server.posts)
    with stdin.open("rb") as source:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            await server.wait_until(lambda: len(server.posts) - already >= count, timeout=WAIT_SECONDS)
            posted = time.perf_counter() - started
            try:
                await asyncio.wait_for(process.wait(), 0.01 if command[0] == "nc" else WAIT_SECONDS)
                exited: float | None = time.perf_counter() - started
            except asyncio.TimeoutError:
                exited = None  # nc waits for the server to hang up; it never reads the acknowledgements
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
    return posted, exited


# The target, honestly: at 50,000 messages posting dominates and send_client is within 1.5x of nc
# (1.2x measured on a quiet machine; a busy one swings from 0.7x to 1.8x). At 10,000, nc takes
# 0.2-0.3 s and the start-up of Python and the client (about 0.1 s) is a third of ours, so the
# ratio swings from 1.5x to 4x between runs: reported, no target.
TARGETS = {50_000: 1.5}
DEFAULT_COUNTS = (10_000, 50_000)


def free_port() -> int:
    """Return a loopback port nothing listens on: the witness finds no chat there and stays off."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def bench(count: int) -> None:
    messages = make_messages(count)
    async with FakeMinechatServer() as server:
        token = server.add_account("Bench Runner")
        with tempfile.TemporaryDirectory() as folder:
            lines = Path(folder) / "messages.txt"
            lines.write_text("".join(f"{message}\n" for message in messages), encoding="utf-8")
            dialogue = Path(folder) / "dialogue.txt"
            dialogue.write_text(token + "\n" + "".join(f"{message}\n\n" for message in messages), encoding="utf-8")

            def command(read_port: int) -> list[str]:
                return [
                    sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1",
                    "--port", str(server.write_port), "--read-port", str(read_port),
                    "--token", token, "--message", "-",
                ]  # fmt: skip

            # Like for like with nc: no witness. Then with the chat as a witness, which also makes the
            # fake server (in this process) show every post to one more reader.
            ours = await time_until_posted(server, command(free_port()), lines, count)
            witnessed = await time_until_posted(server, command(server.read_port), lines, count)
            base = None
            if shutil.which("nc"):
                base = await time_until_posted(
                    server, ["nc", "-N", "127.0.0.1", str(server.write_port)], dialogue, count
                )
        received = [post.lines[0] for post in server.posts]
        expected = messages * (3 if base else 2)
        assert received == expected, "posts arrived out of order or changed"
    print(f"{count:,} messages from stdin over one connection, fake server on loopback")
    print(f"{'':34}{'send_client':>14}{'+ witness':>14}{'nc':>14}")
    print(
        f"{'until the server took all, s':34}{ours[0]:>14.3f}{witnessed[0]:>14.3f}"
        f"{(f'{base[0]:.3f}' if base else 'n/a'):>14}"
    )
    exits = [f"{run[1]:.3f}" if run[1] is not None else "n/a" for run in (ours, witnessed)]
    print(f"{'until all acknowledged (exit), s':34}{exits[0]:>14}{exits[1]:>14}{'(reads none)':>14}")
    if base:
        target = TARGETS.get(count)
        goal = f"target: within {target:g}x" if target else "no target at this size"
        print(f"ratio: {ours[0] / base[0]:.2f}x nc ({goal}); with the witness {witnessed[0] / base[0]:.2f}x")
    else:
        print("baseline skipped: install nc (netcat-openbsd)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, action="append", help="repeat for several (default: 10,000 and 50,000)")
    args = parser.parse_args()
    for count in args.messages or DEFAULT_COUNTS:
        asyncio.run(bench(count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
