"""Measure read_client beside `nc -d HOST PORT | ts '[%d.%m.%y %H:%M]' | tee -a FILE` on loopback.

Prints, for both: throughput on a flood, the delay until one line on a quiet connection is on
disk, and read_client's peak memory for 100,000 and 1,000,000 lines. Targets (issue 2): at least
5x the pipeline's throughput, under 5 ms per quiet line, under 32 MB peak and flat.

    python bench/bench_read.py [--lines 200000] [--quiet-lines 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP_BYTES = len("[27.11.26 09:05] ")
LINES = [
    "Boring Eve: привет всем, как дела?".encode(),
    b"Focused Loyd: the quick brown fox jumps over the lazy dog",
    "Brave Bob: ну и погода сегодня".encode(),
    b"Sleepy Ann: ok",
]
POLL_SECONDS = 0.0002
WAIT_SECONDS = 120.0
QUIET_GAP_SECONDS = 0.05


def make_payload(count: int) -> bytes:
    """Return count chat lines as the server would send them."""
    return b"".join(LINES[i % len(LINES)] + b"\n" for i in range(count))


def history_bytes(payload: bytes) -> int:
    """Return how many bytes the payload takes in a stamped history file."""
    return len(payload) + payload.count(b"\n") * STAMP_BYTES


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_for_size(path: Path, size: int, timeout: float = WAIT_SECONDS) -> float:
    """Poll until the file holds size bytes; return the moment it did."""
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if file_size(path) >= size:
            return now
        if now > deadline:
            raise TimeoutError(f"{path} reached {file_size(path)} of {size} bytes")
        time.sleep(POLL_SECONDS)


# Run the client as users do: with its bytecode cached (compiling it at start costs about 2 MB of memory).
CLIENT_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def start_ours(port: int, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "read_client.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log_path",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=path.parent,
        env=CLIENT_ENV,
    )


def start_ours_piped(port: int, path: Path) -> subprocess.Popen[bytes]:
    """read_client with stdout a pipe that is being read, as by a pager that keeps up."""
    command = (
        f"{sys.executable} {ROOT / 'read_client.py'} --host 127.0.0.1 --port {port} --log_path {path} | cat > /dev/null"
    )
    return subprocess.Popen(
        ["sh", "-c", command], start_new_session=True, cwd=path.parent, stderr=subprocess.DEVNULL, env=CLIENT_ENV
    )


def start_pipeline(port: int, path: Path) -> subprocess.Popen[bytes]:
    command = f"nc -d 127.0.0.1 {port} | ts '[%d.%m.%y %H:%M]' | tee -a {path} > /dev/null"
    return subprocess.Popen(["sh", "-c", command], start_new_session=True, cwd=path.parent)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except (PermissionError, ProcessLookupError):
            process.send_signal(signal.SIGINT)
    process.wait(timeout=10)


def peak_rss_mb(pid: int) -> float | None:
    """Return the process's peak resident memory in MB (Linux only)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Session:
    """One client under test, connected to a server socket of ours."""

    def __init__(self, start: Callable[[int, Path], subprocess.Popen[bytes]], folder: Path) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT_SECONDS)
        self.path = folder / "history.log"
        self.path.unlink(missing_ok=True)
        self.process = start(self.listener.getsockname()[1], self.path)
        self.connection, _ = self.listener.accept()
        # Let the client write its own notes (ours: "connected") before measuring.
        time.sleep(0.5)

    def flood(self, payload: bytes) -> float:
        """Send the payload at once; return seconds until all of it is on disk."""
        target = file_size(self.path) + history_bytes(payload)
        sender = threading.Thread(target=self.connection.sendall, args=(payload,))
        started = time.perf_counter()
        sender.start()
        finished = wait_for_size(self.path, target)
        sender.join()
        return finished - started

    def quiet_delays(self, count: int) -> list[float]:
        """Send single lines with pauses; return each one's delay until it is on disk, in ms."""
        delays = []
        line = LINES[0] + b"\n"
        for _ in range(count):
            time.sleep(QUIET_GAP_SECONDS)
            target = file_size(self.path) + history_bytes(line)
            started = time.perf_counter()
            self.connection.sendall(line)
            delays.append((wait_for_size(self.path, target) - started) * 1000)
        return delays

    def close(self) -> float | None:
        rss = peak_rss_mb(self.process.pid)
        self.connection.close()
        self.listener.close()
        stop(self.process)
        return rss


def measure(
    start: Callable[[int, Path], subprocess.Popen[bytes]], folder: Path, lines: int, quiet: int
) -> dict[str, float]:
    session = Session(start, folder)
    try:
        seconds = session.flood(make_payload(lines))
        delays = session.quiet_delays(quiet)
    finally:
        session.close()
    return {
        "seconds": seconds,
        "rate": lines / seconds,
        "median_ms": statistics.median(delays),
        "p99_ms": statistics.quantiles(delays, n=100)[98] if len(delays) > 1 else delays[0],
        "max_ms": max(delays),
    }


def measure_memory(folder: Path, lines: int) -> float | None:
    session = Session(start_ours, folder)
    try:
        session.flood(make_payload(lines))
    finally:
        rss = session.close()
    return rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--quiet-lines", type=int, default=100)
    args = parser.parse_args()
    have_baseline = shutil.which("nc") and shutil.which("ts") and shutil.which("tee")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        ours = measure(start_ours, work, args.lines, args.quiet_lines)
        piped = measure(start_ours_piped, work, args.lines, args.quiet_lines)
        base = measure(start_pipeline, work, args.lines, args.quiet_lines) if have_baseline else None
        small = measure_memory(work, 100_000)
        large = measure_memory(work, 1_000_000)
    print(f"flood of {args.lines:,} lines, quiet line x{args.quiet_lines}, loopback")
    print(f"{'':28}{'read_client':>14}{'| cat':>14}{'nc|ts|tee':>14}")
    rows = [
        ("flood time, s", "seconds", "{:.3f}"),
        ("throughput, lines/s", "rate", "{:,.0f}"),
        ("quiet line to disk, median ms", "median_ms", "{:.2f}"),
        ("quiet line to disk, p99 ms", "p99_ms", "{:.2f}"),
        ("quiet line to disk, max ms", "max_ms", "{:.2f}"),
    ]
    for label, key, form in rows:
        theirs = form.format(base[key]) if base else "n/a"
        print(f"{label:28}{form.format(ours[key]):>14}{form.format(piped[key]):>14}{theirs:>14}")
    print("read_client: stdout to /dev/null; | cat: stdout a pipe that is being read")
    if base:
        print(
            f"throughput ratio: {ours['rate'] / base['rate']:.1f}x the pipeline, "
            f"{piped['rate'] / base['rate']:.1f}x with stdout piped (target: at least 5x)"
        )
    else:
        print("baseline skipped: install nc (netcat-openbsd) and ts (moreutils)")

    def show(mb: float | None) -> str:
        return f"{mb:.1f} MB" if mb is not None else "n/a"

    print(
        f"read_client peak memory: {show(small)} for 100,000 lines, {show(large)} for 1,000,000 (target: < 32 MB, flat)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
