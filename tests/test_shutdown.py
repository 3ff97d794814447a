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
import read_client
from _minechat.shutdown import SignalCatcher, cancel_and_wait, first_of, run_until_signal
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


async def swallow_one_cancel(ticks: list[float]) -> None:
    """Run until cancelled twice, swallowing the first cancel as wait_for can before Python 3.12."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)  # a connect that keeps being refused
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
        ticks.append(asyncio.get_running_loop().time())


async def test_cancel_and_wait_cancelled_itself_still_waits_for_its_task() -> None:
    ticks: list[float] = []
    task = asyncio.ensure_future(swallow_one_cancel(ticks))
    stopping = asyncio.ensure_future(cancel_and_wait(task))
    await asyncio.wait_for(wait_for_ticks(ticks, 1), WAIT)
    stopping.cancel()  # as an outer cancel_and_wait does again after RECANCEL_SECONDS
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopping, WAIT)
    assert task.cancelled()  # not left running with nobody to cancel it again


async def wait_for_ticks(ticks: list[float], count: int) -> None:
    while len(ticks) < count:
        await asyncio.sleep(0.01)


async def test_nested_stops_leave_no_task_running() -> None:
    # read_client's nesting: run_until_signal(run_while_writing(tail)), each level stopping the next
    # with cancel_and_wait; the outer one's second cancel once cut the middle one's wait short.
    ticks: list[float] = []
    writer = asyncio.ensure_future(asyncio.Event().wait())
    with SignalCatcher() as signals:
        task = asyncio.ensure_future(
            run_until_signal(read_client.run_while_writing(swallow_one_cancel(ticks), writer), signals)
        )
        await asyncio.wait_for(wait_for_ticks(ticks, 1), WAIT)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(cancel_and_wait_raising(task), WAIT)
    ended = len(ticks)
    await asyncio.sleep(_minechat.shutdown.RECANCEL_SECONDS * 2)
    assert len(ticks) == ended  # the innermost work has ended too
    await cancel_and_wait(writer)


async def cancel_and_wait_raising(task: asyncio.Future[object]) -> None:
    """Cancel task once, as the test's top level, and wait for what it raises."""
    task.cancel()
    await task


async def test_cancel_and_wait_returns_what_the_task_raised_and_retrieves_it() -> None:
    async def fail() -> None:
        raise ProtocolError("odd reply")

    async def succeed() -> int:
        return 1

    failed, succeeded, running = (asyncio.ensure_future(work) for work in (fail(), succeed(), asyncio.sleep(3600)))
    await asyncio.wait({failed, succeeded})
    caught = await cancel_and_wait(failed)
    assert isinstance(caught, ProtocolError)
    assert await cancel_and_wait(succeeded) is None
    assert await cancel_and_wait(running) is None
    assert running.cancelled()
    # Retrieved: asyncio would otherwise log "Task exception was never retrieved", an error under filterwarnings.
    assert failed._log_traceback is False  # type: ignore[attr-defined]


async def test_first_of_leaves_the_future_and_cancels_the_other() -> None:
    gate = asyncio.Event()
    future = asyncio.ensure_future(gate.wait())
    other_cancelled = asyncio.Event()

    async def other() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            other_cancelled.set()
            raise

    waiting = asyncio.ensure_future(first_of(future, other()))
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.set()
    assert await asyncio.wait_for(waiting, WAIT) is True
    assert other_cancelled.is_set()
    assert future.done() and not future.cancelled()


async def test_first_of_when_the_other_comes_first() -> None:
    gate = asyncio.Event()
    future = asyncio.ensure_future(asyncio.sleep(3600))
    try:
        gate.set()
        assert await asyncio.wait_for(first_of(future, gate.wait()), WAIT) is False
        assert not future.done()  # still running: first_of never cancels it
    finally:
        await cancel_and_wait(future)


async def test_first_of_raises_what_the_other_raised() -> None:
    async def fail() -> None:
        raise ProtocolError("odd reply")

    future = asyncio.ensure_future(asyncio.sleep(3600))
    try:
        with pytest.raises(ProtocolError):
            await asyncio.wait_for(first_of(future, fail()), WAIT)
    finally:
        await cancel_and_wait(future)


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
