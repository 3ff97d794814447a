"""Start-up: how long `--help` of each client takes, beside `python -c "import asyncio"` in the same interpreter."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 9
# The layout issue's goal: --help within this many times the floor of importing asyncio.
TARGET_RATIO = 1.35
# As users run the clients: with bytecode cached (compiling at every start would be most of the figure).
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run_once(command: list[str]) -> tuple[float, float]:
    """Run a command; return its wall time and the CPU time it used (user and system)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, env=ENVIRONMENT)
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    else:  # Windows: no rusage of a child; wall time stands in
        process.wait()
        cpu = time.perf_counter() - start
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"{command} failed with {process.returncode}")
    return wall, cpu


def measure(command: list[str]) -> tuple[float, float]:
    """Return the median wall and CPU time of a command over RUNS runs, after one run that warms the caches."""
    run_once(command)
    walls, cpus = zip(*(run_once(command) for _ in range(RUNS)), strict=True)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    wall_floor, cpu_floor = measure([sys.executable, "-c", "import asyncio"])
    print(f"start-up, median of {RUNS} runs (bytecode cached); CPU time is steadier than wall time on a busy machine")
    print(f"{'':<30}{'wall ms':>9}{'CPU ms':>9}{'CPU ratio':>11}")
    floor_name = 'python -c "import asyncio"'
    print(f"{floor_name:<30}{wall_floor * 1000:9.1f}{cpu_floor * 1000:9.1f}{'1.00x':>11}")
    for script in ("read_client.py", "send_client.py"):
        wall, cpu = measure([sys.executable, script, "--help"])
        ratio = f"{cpu / cpu_floor:.2f}x"
        print(f"{script + ' --help':<30}{wall * 1000:9.1f}{cpu * 1000:9.1f}{ratio:>11}")
    print(f"target: --help within {TARGET_RATIO}x of importing asyncio")


if __name__ == "__main__":
    main()
