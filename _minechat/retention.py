"""Keeping a dated history small: --compress gzips finished files, --keep-days removes old ones.

A file is finished once the reader has moved on to the next date's file. Compression is
crash-safe: the copy is written under a temporary name, flushed to disk and renamed to its final
name before the plain file is removed, so a crash at any moment leaves a whole copy, and never a
cut .gz under the final name. A file another reader holds its lock on is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from _minechat.history import GZIP_SUFFIX, HistoryPattern
from _minechat.recorder import DaemonExecutor
from chat_io import describe_error, lock_file

logger = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"  # name.gz.tmp: what a compression writes before it is whole
COPY_BYTES = 1024 * 1024
# gzip's own default: 9 takes twice the time for a file a few per cent smaller.
COMPRESS_LEVEL = 6
# How often a running reader looks whether it has moved on to a new file (at midnight).
CHECK_SECONDS = 60.0
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)


def finished_files(pattern: HistoryPattern, current: Path) -> Iterator[Path]:
    """Yield the files the pattern made, plain and gzipped, but for the current one; a .gz beside its plain file too."""
    for path in pattern.earlier_files(current):
        yield path
        plain = Path(str(path).removesuffix(GZIP_SUFFIX))
        if path != plain:
            continue
        twin = Path(str(path) + GZIP_SUFFIX)
        if twin.is_file():  # a compression cut off after its rename: earlier_files gives the plain one only
            yield twin


def sync_folder(folder: Path) -> None:
    """Make a rename or a removal in folder durable (POSIX; Windows has no folder to sync)."""
    if sys.platform == "win32":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def compress_file(path: Path) -> bool:
    """Gzip a finished file as path.gz and remove it, crash-safely; tell whether it did (not if another holds it)."""
    target = path.with_name(path.name + GZIP_SUFFIX)
    temporary = target.with_name(target.name + TEMPORARY_SUFFIX)
    descriptor = os.open(path, OPEN_FLAGS)
    try:
        if not lock_file(descriptor, wait=False):
            return False  # another reader writes it: not finished for it
        status = os.fstat(descriptor)
        with open(descriptor, "rb", closefd=False) as source, open(temporary, "wb") as raw:
            os.chmod(temporary, status.st_mode & 0o777)
            with gzip.GzipFile(path.name, "wb", COMPRESS_LEVEL, raw, int(status.st_mtime)) as packed:
                shutil.copyfileobj(source, packed, COPY_BYTES)
            raw.flush()
            os.fsync(raw.fileno())
        os.utime(temporary, (status.st_atime, status.st_mtime))  # so it sorts where the plain file did
        os.replace(temporary, target)
        sync_folder(target.parent)
    finally:
        os.close(descriptor)
    os.remove(path)
    sync_folder(path.parent)
    return True


def day_of(pattern: HistoryPattern, path: Path) -> datetime:
    """Return the moment a file of the history stands for: the date in its name, else when it was last written."""
    with contextlib.suppress(ValueError):
        return datetime.strptime(str(path).removesuffix(GZIP_SUFFIX), pattern.text)
    return datetime.fromtimestamp(os.stat(path).st_mtime)


def is_held(path: Path) -> bool:
    """Tell whether another reader holds its lock on a file."""
    descriptor = os.open(path, OPEN_FLAGS)
    try:
        return not lock_file(descriptor, wait=False)
    finally:
        os.close(descriptor)


def tidy(pattern: HistoryPattern, current: Path, compress: bool, keep_days: int, now: datetime) -> None:
    """Remove the finished files older than keep_days (0: none), then gzip the other finished plain ones."""
    kept = []
    oldest = (now - timedelta(days=keep_days)).replace(hour=0, minute=0, second=0, microsecond=0)
    for path in finished_files(pattern, current):
        try:
            if keep_days and day_of(pattern, path) < oldest and not is_held(path):
                os.remove(path)
                logger.info("removed %s: older than %d days (--keep-days)", path, keep_days)
            else:
                kept.append(path)
        except OSError as error:
            logger.warning("cannot remove %s: %s", path, describe_error(error))
    if not compress:
        return
    for path in kept:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path.with_name(path.name + TEMPORARY_SUFFIX))  # a compression a crash cut off
        if path.name.endswith(GZIP_SUFFIX):
            continue
        try:
            if compress_file(path):
                logger.info("compressed %s (--compress)", path)
        except OSError as error:
            logger.warning("cannot compress %s: %s; it stays as it is", path, describe_error(error))


async def keep_small(
    pattern: HistoryPattern,
    current: Callable[[], Path],
    compress: bool,
    keep_days: int,
    check_seconds: float = CHECK_SECONDS,
) -> None:
    """Tidy the history at start and whenever the reader has moved on to a new file, until cancelled.

    The work runs on a daemon thread: a stop does not wait for a compression, which a crash leaves whole too.
    """
    executor = DaemonExecutor("retention")
    loop = asyncio.get_running_loop()
    done = None
    try:
        while True:
            path = current()
            if path != done:
                done = path
                await loop.run_in_executor(executor, tidy, pattern, path, compress, keep_days, datetime.now())
            await asyncio.sleep(CHECK_SECONDS)
    finally:
        executor.shutdown(wait=False)
