"""Reconnecting: the backoff delays; the reader back after drops, resets and refusals without losing a line."""

from __future__ import annotations

import random

from chat_io import backoff


def test_backoff_grows_to_cap_without_jitter() -> None:
    delays = backoff(initial=0.5, factor=2, cap=4, jitter=0)
    assert [next(delays) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_backoff_jitter_only_shortens() -> None:
    delays = backoff(initial=1, factor=2, cap=60, jitter=0.25, rng=random.Random(7))
    taken = [next(delays) for _ in range(10)]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert all(0.75 * ceiling <= delay <= ceiling for delay, ceiling in zip(taken, ceilings, strict=True))
    assert len(set(taken[-4:])) == 4
