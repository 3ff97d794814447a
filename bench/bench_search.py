"""Measure read_client --search beside `zgrep -h PATTERN` over the same month of history.

Writes 30 dated files of bot-like chat (about 50,000 lines a day, 1.5 M lines in all), the first
29 gzipped as --compress leaves them and the last one plain, with the reader's notes between. Then
times, for a few patterns, `read_client.py --search PATTERN` (the whole process, start-up included)
and `zgrep -h PATTERN` over the same files, each the best of a few runs, and checks that both
print the same number of lines. Target (issue 23): at most 2x zgrep's time; aim to match it.

    python bench/bench_search.py [--days 30] [--lines-per-day 50000] [--runs 3] [--format text]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _minechat.jsonl import format_json_record  # noqa: E402 the checkout's own module, found through the line above

NICKS = ["Boring Eve", "Focused Loyd", "Brave Bob", "Sleepy Ann", "Vlad", "Лёша", "bot_9000", "Anonymous"]
WORDS = (  # noqa: SIM905 (a list of 100 words is easier to read as a sentence)
    "the a to and of in is it you that for on was with as have but be are not this at what all do so can "
    "just like if my about get out up one time there when how now think know chat server python code "
    "bot test message hello world again today night morning work done fine good great thanks please "
    "привет всем как дела что где когда почему ну и погода сегодня завтра вчера код сервер чат бот "
    "спасибо пожалуйста да нет может быть очень хорошо плохо опять снова тут там работа дом игра"
).split()
# Planted now and then, so that the rare pattern finds what a rare word finds: about 1 line in 2,000.
RARE_WORDS = ["asyncio.open_connection", "Release 1.4.2", "deploy finished"]
RARE_EVERY = 2000
# (what it finds, the pattern): a rare word, a common Russian one, a nickname, a regular expression.
PATTERNS = [("rare", "asyncio"), ("common", "погода"), ("nickname", "Vlad: "), ("regex", "release [0-9]+")]
NOTES_PER_DAY = 6


def day_lines(day: datetime, count: int, rng: random.Random, history_format: str) -> list[str]:
    """Return one day of history: chat every ~1.7 s with a few notes of reconnects."""
    lines = []
    step = 86400 / count
    note_every = count // NOTES_PER_DAY
    for number in range(count):
        when = day + timedelta(seconds=number * step)
        if number % note_every == 0:
            text = "connection lost: [Errno 104] Connection reset by peer; next try in 0.5 s"
            if history_format == "jsonl":
                lines.append(format_json_record(when.astimezone().isoformat(timespec="seconds"), text, event="lost"))
            else:
                lines.append(f"{when:[%d.%m.%y %H:%M]} *** {text}\n")
        nick = rng.choice(NICKS)
        text = " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))
        if rng.randrange(RARE_EVERY) == 0:
            text += " " + rng.choice(RARE_WORDS)
        if history_format == "jsonl":
            lines.append(format_json_record(when.astimezone().isoformat(timespec="seconds"), text, nick))
        else:
            lines.append(f"{when:[%d.%m.%y %H:%M]} {nick}: {text}\n")
    return lines


def make_month(folder: Path, days: int, per_day: int, history_format: str) -> tuple[str, list[Path], int]:
    """Write the history; return its --log_path, its files oldest first and its line count."""
    rng = random.Random(23)
    suffix = "jsonl" if history_format == "jsonl" else "txt"
    first = datetime(2026, 11, 1)
    files, total = [], 0
    for index in range(days):
        day = first + timedelta(days=index)
        data = "".join(day_lines(day, per_day, rng, history_format)).encode()
        total += data.count(b"\n")
        path = folder / f"{day:%Y-%m-%d}.{suffix}"
        if index < days - 1:
            path = path.with_name(path.name + ".gz")
            path.write_bytes(gzip.compress(data, compresslevel=6))
        else:
            path.write_bytes(data)
        stamp = (day + timedelta(days=1)).timestamp()
        os.utime(path, (stamp, stamp))
        files.append(path)
    return str(folder / f"%Y-%m-%d.{suffix}"), files, total


def best_of(runs: int, command: list[str]) -> tuple[float, float, int]:
    """Run a command runs times; return the best wall time, the best CPU time (its children's too) and its lines."""
    best, best_cpu, count = float("inf"), float("inf"), 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        count = result.stdout.count(b"\n")
    return best, best_cpu, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--lines-per-day", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", choices=("text", "jsonl"), default="text")
    args = parser.parse_args()
    if shutil.which("zgrep") is None:
        print("zgrep is not installed: nothing to compare with")
        return 1
    folder = Path(tempfile.mkdtemp(prefix="bench_search_"))
    try:
        log_path, files, total = make_month(folder, args.days, args.lines_per_day, args.format)
        size = sum(path.stat().st_size for path in files)
        print(f"{total:,} lines in {len(files)} files ({len(files) - 1} gzipped), {size / 1e6:.1f} MB on disk")
        print("best of each: wall time, then CPU time (steadier on a busy machine); zgrep's includes gzip's")
        print(f"{'pattern':<10}{'--search':>16}{'zgrep -h':>16}{'ratio':>12}{'zgrep -hi':>16}{'ratio':>12}  lines")
        reader = [sys.executable, str(ROOT / "read_client.py"), "--log_path", log_path, "--format", args.format]
        worst = worst_cpu = 0.0
        for what, pattern in PATTERNS:
            ours, ours_cpu, found = best_of(args.runs, [*reader, "--search", pattern])
            # -E: the same syntax for these patterns. `zgrep -h` is the yardstick; --search ignores
            # case in a pattern without upper-case letters, as `zgrep -hi` does, so that is shown too.
            theirs, theirs_cpu, grepped = best_of(args.runs, ["zgrep", "-hE", pattern, *map(str, files)])
            folded, folded_cpu, _ = best_of(args.runs, ["zgrep", "-hiE", pattern, *map(str, files)])
            worst, worst_cpu = max(worst, ours / theirs), max(worst_cpu, ours_cpu / theirs_cpu)
            print(
                f"{what:<10}{ours:>7.2f}s {ours_cpu:>5.2f}s{theirs:>8.2f}s {theirs_cpu:>5.2f}s"
                f"{ours / theirs:>6.2f}x {ours_cpu / theirs_cpu:>4.2f}x"
                f"{folded:>8.2f}s {folded_cpu:>5.2f}s{ours / folded:>6.2f}x {ours_cpu / folded_cpu:>4.2f}x"
                f"  {found} (zgrep: {grepped})"
            )
        print(f"worst ratio to zgrep -h: {worst:.2f}x wall, {worst_cpu:.2f}x CPU (target: at most 2x)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
