"""Measure read_client beside `nc -d HOST PORT | ts '[%d.%m.%y %H:%M]' | tee -a FILE` on loopback.

Prints, for both: throughput on a flood, the delay until one line on a quiet connection is on
disk, and read_client's peak memory for 100,000 and 1,000,000 lines. Targets (issue 2): at least
5x the pipeline's throughput, under 5 ms per quiet line, under 32 MB peak and flat.
Then (issue 10) the same flood into a JSON Lines history (--format jsonl), and the time from
start until the backlog of a 1,000,000-line history is on stdout, for both formats, beside the
time a start without backlog takes to connect.
Then (issue 22) the flood with two --ignore and two --highlight given (half the lines hidden, a
quarter marked), beside none, with stdout /dev/null and with stdout a terminal (a pseudo-terminal
read as fast as it comes): without them the view must cost nothing.

    python bench/bench_read.py [--lines 200000] [--quiet-lines 100] [--history-lines 1000000]
"""

from __future__ import annotations

import argparse
import os
import shlex
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _minechat.jsonl import JsonLineStamper  # noqa: E402 the checkout's own module, found through the line above

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


def history_bytes(payload: bytes, history_format: str = "text") -> int:
    """Return how many bytes the payload takes in a stamped history file."""
    if history_format == "jsonl":
        iso = datetime.now().astimezone().isoformat(timespec="seconds")  # the same length as the client's
        return len(JsonLineStamper().feed(payload, iso).encode())
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


def start_ours(port: int, path: Path, *options: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
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
            *options,
        ],
        stdout=stdout,
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


def start_jsonl(port: int, path: Path) -> subprocess.Popen[bytes]:
    return start_ours(port, path, "--format", "jsonl")


# Two nicknames of the flood hidden, and a word in each of the other two's lines (one of them hidden too).
VIEW_OPTIONS = ("--ignore", "Sleepy Ann", "--ignore", "Brave Bob", "--highlight", "fox", "--highlight", "погода")


def start_view(port: int, path: Path) -> subprocess.Popen[bytes]:
    return start_ours(port, path, *VIEW_OPTIONS)


def start_on_terminal(port: int, path: Path, *options: str) -> subprocess.Popen[bytes]:
    """read_client with stdout a pseudo-terminal that a thread reads as fast as it comes (POSIX only)."""
    import pty

    controller, terminal = pty.openpty()
    process = start_ours(port, path, *options, stdout=terminal)
    os.close(terminal)

    def drain() -> None:
        try:
            while os.read(controller, 1 << 16):
                pass
        except OSError:  # the client has exited: the terminal is gone
            pass
        os.close(controller)

    threading.Thread(target=drain, daemon=True).start()
    return process


def start_tty(port: int, path: Path) -> subprocess.Popen[bytes]:
    return start_on_terminal(port, path)


def start_view_tty(port: int, path: Path) -> subprocess.Popen[bytes]:
    return start_on_terminal(port, path, *VIEW_OPTIONS)


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

    def __init__(
        self, start: Callable[[int, Path], subprocess.Popen[bytes]], folder: Path, history_format: str = "text"
    ) -> None:
        self.history_format = history_format
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
        target = file_size(self.path) + history_bytes(payload, self.history_format)
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
            target = file_size(self.path) + history_bytes(line, self.history_format)
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
    start: Callable[[int, Path], subprocess.Popen[bytes]],
    folder: Path,
    lines: int,
    quiet: int,
    history_format: str = "text",
) -> dict[str, float]:
    session = Session(start, folder, history_format)
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


def write_history(path: Path, lines: int, history_format: str) -> None:
    """Write a history of lines chat lines, with a connection note every 1,000, in blocks."""
    block = 10_000
    with open(path, "wb") as file:
        for first in range(0, lines, block):
            if history_format == "jsonl":
                iso = "2026-11-27T09:05:00+03:00"
                notes = f'{{"time": "{iso}", "nick": null, "text": "connected to h:5000", "event": "connected"}}\n'
                chat = JsonLineStamper().feed(make_payload(1000), iso)
            else:
                notes = "[27.11.26 09:05] *** connected to h:5000\n"
                chat = "".join(f"[27.11.26 09:05] {line.decode()}\n" for line in make_payload(1000).splitlines())
            file.write(((notes + chat) * (min(block, lines - first) // 1000)).encode())


def measure_backlog(folder: Path, history_lines: int, history_format: str, backlog: int) -> dict[str, float]:
    """Start read_client on a large history; return seconds until the backlog is shown and until it connects."""
    path = folder / f"big-{history_format}.log"
    if not path.exists():
        write_history(path, history_lines, history_format)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT_SECONDS)
    options = ("--format", history_format, "--backlog", str(backlog))
    started = time.perf_counter()
    process = start_ours(listener.getsockname()[1], path, *options, stdout=subprocess.PIPE)
    try:
        shown = started
        if backlog:
            assert process.stdout is not None
            for _ in range(backlog + 1):  # the lines, then the status line that ends them
                process.stdout.readline()
            shown = time.perf_counter()
        connection, _ = listener.accept()
        connected = time.perf_counter()
        connection.close()
    finally:
        listener.close()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    return {"shown": shown - started, "connected": connected - started, "size_mb": path.stat().st_size / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--quiet-lines", type=int, default=100)
    parser.add_argument("--history-lines", type=int, default=1_000_000)
    args = parser.parse_args()
    have_baseline = shutil.which("nc") and shutil.which("ts") and shutil.which("tee")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        ours = measure(start_ours, work, args.lines, args.quiet_lines)
        piped = measure(start_ours_piped, work, args.lines, args.quiet_lines)
        base = measure(start_pipeline, work, args.lines, args.quiet_lines) if have_baseline else None
        small = measure_memory(work, 100_000)
        large = measure_memory(work, 1_000_000)
        jsonl = measure(start_jsonl, work, args.lines, args.quiet_lines, "jsonl")
        view = measure(start_view, work, args.lines, args.quiet_lines)
        on_terminal = os.name == "posix"
        tty = measure(start_tty, work, args.lines, args.quiet_lines) if on_terminal else None
        view_tty = measure(start_view_tty, work, args.lines, args.quiet_lines) if on_terminal else None
        backlogs = {
            history_format: (
                measure_backlog(work, args.history_lines, history_format, 10),
                measure_backlog(work, args.history_lines, history_format, 0),
            )
            for history_format in ("text", "jsonl")
        }
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
    print(f"flood of {args.lines:,} lines into a JSON Lines history (--format jsonl), quiet line x{args.quiet_lines}")
    print(f"{'':28}{'text':>14}{'jsonl':>14}")
    for label, key, form in rows:
        print(f"{label:28}{form.format(ours[key]):>14}{form.format(jsonl[key]):>14}")
    if base:
        print(f"jsonl throughput ratio: {jsonl['rate'] / base['rate']:.1f}x the pipeline")
    print(f"flood of {args.lines:,} lines with {shlex.join(VIEW_OPTIONS)}, quiet line x{args.quiet_lines}")
    print(f"{'':28}{'none':>14}{'with them':>14}{'none, tty':>14}{'them, tty':>14}")
    for label, key, form in rows:
        cells = [form.format(run[key]) if run else "n/a" for run in (ours, view, tty, view_tty)]
        print(f"{label:28}" + "".join(f"{cell:>14}" for cell in cells))
    print("none and with them: stdout /dev/null (--highlight marks only on a terminal); tty: a pseudo-terminal")
    for history_format, (shown, bare) in backlogs.items():
        print(
            f"backlog of 10 from a {args.history_lines:,}-line {history_format} history ({shown['size_mb']:.0f} MB): "
            f"on stdout {shown['shown'] * 1000:.0f} ms after start, connected at {shown['connected'] * 1000:.0f} ms; "
            f"with --backlog 0 connected at {bare['connected'] * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
