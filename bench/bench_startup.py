"""Start-up: how long `--help` of each client takes, beside `python -c "import asyncio"` in the same interpreter."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 15
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


def measure(commands: list[list[str]]) -> list[tuple[float, float]]:
    """Return each command's median wall and CPU time over RUNS rounds, after one round that warms the caches.

    The commands run in turn within each round, so a machine that gets busier or quieter meanwhile
    moves the floor and the clients alike, and their ratio stays put.
    """
    for command in commands:
        run_once(command)
    rounds = [[run_once(command) for command in commands] for _ in range(RUNS)]
    results = []
    for index in range(len(commands)):
        walls, cpus = zip(*(round_[index] for round_ in rounds), strict=True)
        results.append((statistics.median(walls), statistics.median(cpus)))
    return results


def main() -> None:
    scripts = ("read_client.py", "send_client.py")
    floor, *clients = measure(
        [[sys.executable, "-c", "import asyncio"]] + [[sys.executable, s, "--help"] for s in scripts]
    )
    wall_floor, cpu_floor = floor
    print(f"start-up, median of {RUNS} rounds (bytecode cached; the floor and the clients in turn in each round)")
    print(f"{'':<30}{'wall ms':>9}{'CPU ms':>9}{'CPU ratio':>11}")
    floor_name = 'python -c "import asyncio"'
    print(f"{floor_name:<30}{wall_floor * 1000:9.1f}{cpu_floor * 1000:9.1f}{'1.00x':>11}")
    for script, (wall, cpu) in zip(scripts, clients, strict=True):
        ratio = f"{cpu / cpu_floor:.2f}x"
        print(f"{script + ' --help':<30}{wall * 1000:9.1f}{cpu * 1000:9.1f}{ratio:>11}")
    print(f"target: --help within {TARGET_RATIO}x of importing asyncio")


if __name__ == "__main__":
    main()
