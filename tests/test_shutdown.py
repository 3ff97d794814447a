"""Stopping: exit codes, cancelling work, and the signal catcher."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from helpers import POSIX_ONLY, WAIT

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd
from _minechat.shutdown import SignalCatcher, cancel_and_wait, run_until_signal
from chat_io import ChatError, ConnectionFailed, FileError, ProtocolError, UnknownTokenError, exit_code_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConnectionFailed("x"), 3),
        (ProtocolError("x"), 4),
        (UnknownTokenError("x"), 5),
        (FileError("x"), 6),
        (ChatError("x"), 1),
    ],
)
def test_exit_codes(error: ChatError, code: int) -> None:
    assert exit_code_for(error) == code


async def test_cancel_and_wait_survives_a_swallowed_cancel() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        # What asyncio.wait_for does before Python 3.12 when its inner call completes as it is cancelled.
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_run_until_signal_returns_none_and_raises_work_errors() -> None:
    async def fail() -> None:
        raise ProtocolError("odd reply")

    async def succeed() -> None:
        return None

    with SignalCatcher() as signals:
        assert await run_until_signal(succeed(), signals) is None
        with pytest.raises(ProtocolError):
            await run_until_signal(fail(), signals)


@POSIX_ONLY
@pytest.mark.usefixtures("default_signal_handlers")
async def test_signal_catcher_catches_a_real_signal() -> None:
    with _minechat.shutdown.SignalCatcher() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.wait(), WAIT)
        assert signals.received == signal.SIGTERM
        assert signals.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
