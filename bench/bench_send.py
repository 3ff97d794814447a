"""Measure send_client posting a stream from stdin beside nc pushing the same dialogue.

Both talk to the bundled fake server on loopback, which counts the posts it takes. nc is the
floor: it sends the token and every message blindly, without reading a reply. send_client
reads every acknowledgement and matches it to its post. Target (issue 7): within 1.5x of nc.

    python bench/bench_send.py [--messages 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
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


async def bench(count: int) -> None:
    messages = make_messages(count)
    async with FakeMinechatServer() as server:
        token = server.add_account("Bench Runner")
        with tempfile.TemporaryDirectory() as folder:
            lines = Path(folder) / "messages.txt"
            lines.write_text("".join(f"{message}\n" for message in messages), encoding="utf-8")
            dialogue = Path(folder) / "dialogue.txt"
            dialogue.write_text(token + "\n" + "".join(f"{message}\n\n" for message in messages), encoding="utf-8")
            ours_command = [
                sys.executable, str(ROOT / "send_client.py"), "--host", "127.0.0.1",
                "--port", str(server.write_port), "--token", token, "--message", "-",
            ]  # fmt: skip
            ours = await time_until_posted(server, ours_command, lines, count)
            base = None
            if shutil.which("nc"):
                base = await time_until_posted(
                    server, ["nc", "-N", "127.0.0.1", str(server.write_port)], dialogue, count
                )
        received = [post.lines[0] for post in server.posts]
        expected = messages * (2 if base else 1)
        assert received == expected, "posts arrived out of order or changed"
    print(f"{count:,} messages from stdin over one connection, fake server on loopback")
    print(f"{'':34}{'send_client':>14}{'nc':>14}")
    print(f"{'until the server took all, s':34}{ours[0]:>14.3f}{(f'{base[0]:.3f}' if base else 'n/a'):>14}")
    exit_time = f"{ours[1]:.3f}" if ours[1] is not None else "n/a"
    print(f"{'until all acknowledged (exit), s':34}{exit_time:>14}{'(reads none)':>14}")
    if base:
        print(f"ratio: {ours[0] / base[0]:.2f}x nc (target: within 1.5x)")
    else:
        print("baseline skipped: install nc (netcat-openbsd)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(bench(args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
