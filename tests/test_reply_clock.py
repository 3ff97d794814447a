"""The reply clock from tables, without sockets: deadlines, upload time, the wait that stretches and starts over."""

from __future__ import annotations

import pytest

from _minechat.reply_clock import MAX_ACK_WAIT, UPLOAD_FLOOR_BYTES_PER_SECOND, ReplyClock

TIMEOUT = 2.0


def posting_clock(now: float = 0.0) -> ReplyClock:
    """A clock on a connection that posts: welcomed, nothing owed yet."""
    clock = ReplyClock(TIMEOUT)
    clock.connect(now, shown=0)
    clock.replied(now, owed=False, posting=True, shown=0)
    return clock


def test_a_connection_owes_its_greeting_within_the_reply_timeout() -> None:
    clock = ReplyClock(TIMEOUT)
    clock.connect(100.0, shown=0)
    assert clock.remaining(100.5) == pytest.approx(1.5)
    assert clock.expire(102.0, posting=False, shown=0) == TIMEOUT
    assert clock.ack_wait == TIMEOUT  # a late greeting stretches nothing


@pytest.mark.parametrize(
    ("size", "deadline"),
    [
        (10, TIMEOUT + 10 / UPLOAD_FLOOR_BYTES_PER_SECOND),
        (1024 * 1024, TIMEOUT + 32.0),  # a 1 MiB post gets 32 s more
    ],
)
def test_a_post_gets_its_upload_time(size: int, deadline: float) -> None:
    clock = posting_clock()
    clock.sent(0.0, size, owed=True, posting=True, shown=0)
    assert clock.deadline == pytest.approx(deadline)


def test_more_posts_while_one_is_due_add_upload_time_only() -> None:
    clock = posting_clock()
    clock.sent(0.0, 0, owed=True, posting=True, shown=0)
    clock.sent(1.0, UPLOAD_FLOOR_BYTES_PER_SECOND, owed=True, posting=True, shown=0)
    assert clock.deadline == pytest.approx(TIMEOUT + 1.0)


def test_nothing_owed_means_no_deadline() -> None:
    clock = posting_clock()
    clock.sent(0.0, 100, owed=False, posting=True, shown=0)
    assert clock.remaining(5.0) is None


@pytest.mark.parametrize(
    ("timeouts", "ack_wait"),
    [(1, 4.0), (2, 8.0), (3, 16.0), (7, 240.0), (20, MAX_ACK_WAIT)],
)
def test_each_timeout_doubles_the_wait_up_to_the_cap(timeouts: int, ack_wait: float) -> None:
    clock = posting_clock()
    now = 0.0
    for _ in range(timeouts):
        clock.sent(now, 0, owed=True, posting=True, shown=0)
        now = clock.deadline or now
        assert clock.expire(now, posting=True, shown=0) is not None
        clock.replied(now, owed=False, posting=True, shown=0)  # a new connection's clock, as after a timeout
    assert clock.ack_wait == ack_wait


def test_a_timeout_names_the_wait_that_ran_out_and_the_next_is_longer() -> None:
    clock = posting_clock()
    clock.sent(0.0, 0, owed=True, posting=True, shown=0)
    assert clock.expire(TIMEOUT, posting=True, shown=0) == TIMEOUT
    assert clock.ack_wait == 2 * TIMEOUT


def test_posts_shown_in_the_chat_meanwhile_stretch_the_wait_instead_of_a_timeout() -> None:
    clock = posting_clock()
    clock.sent(0.0, 0, owed=True, posting=True, shown=0)
    assert clock.expire(TIMEOUT, posting=True, shown=3) is None  # slow, not gone
    assert clock.deadline == pytest.approx(TIMEOUT + 2 * TIMEOUT)
    # Nothing more shown by the stretched deadline: now it is a timeout.
    assert clock.expire(3 * TIMEOUT, posting=True, shown=3) == 2 * TIMEOUT


def test_an_acknowledgement_on_time_starts_the_wait_over() -> None:
    clock = posting_clock()
    clock.stretch()
    clock.sent(0.0, 0, owed=True, posting=True, shown=0)
    assert clock.ack_wait == 2 * TIMEOUT
    clock.acknowledged(TIMEOUT - 0.5)
    assert clock.ack_wait == TIMEOUT


def test_a_late_acknowledgement_keeps_the_stretched_wait() -> None:
    clock = posting_clock()
    clock.stretch()
    clock.sent(0.0, 0, owed=True, posting=True, shown=0)
    clock.acknowledged(TIMEOUT + 0.5)
    assert clock.ack_wait == 2 * TIMEOUT
    # The next acknowledgement is due from the last one: on time after it, the wait starts over.
    clock.acknowledged(TIMEOUT + 1.0)
    assert clock.ack_wait == TIMEOUT


def test_after_a_reply_the_next_acknowledgement_gets_the_current_wait() -> None:
    clock = posting_clock()
    clock.stretch()
    clock.replied(10.0, owed=True, posting=True, shown=0)
    assert clock.deadline == pytest.approx(10.0 + 2 * TIMEOUT)
    clock.replied(11.0, owed=True, posting=False, shown=0)  # before welcome: --reply-timeout only
    assert clock.deadline == pytest.approx(11.0 + TIMEOUT)


def test_a_new_clock_owes_nothing() -> None:
    assert ReplyClock(TIMEOUT).remaining(0.0) is None


def test_a_new_connection_owes_its_greeting_within_the_reply_timeout_however_stretched_the_wait() -> None:
    clock = posting_clock()
    clock.stretch()
    clock.stretch()
    clock.connect(50.0, shown=0)
    assert clock.remaining(50.0) == pytest.approx(TIMEOUT)  # acknowledgements may take longer; a greeting may not
    assert clock.expire(50.0 + TIMEOUT, posting=False, shown=0) == TIMEOUT


@pytest.mark.parametrize(
    ("late_by", "ack_wait"),
    [(-0.5, TIMEOUT), (0.0, TIMEOUT), (0.5, 2 * TIMEOUT)],
    ids=["early", "just on time", "late"],
)
def test_an_acknowledgement_at_the_reply_timeout_is_on_time(late_by: float, ack_wait: float) -> None:
    clock = posting_clock(now=8.0)
    clock.stretch()
    clock.sent(8.0, 0, owed=True, posting=True, shown=0)
    clock.acknowledged(8.0 + TIMEOUT + late_by)
    assert clock.ack_wait == ack_wait


def test_posts_the_chat_showed_before_the_wait_began_are_no_sign_of_a_slow_server() -> None:
    clock = posting_clock()
    clock.replied(10.0, owed=True, posting=True, shown=3)  # three of ours shown already
    assert clock.expire(10.0 + TIMEOUT, posting=True, shown=3) == TIMEOUT  # nothing new shown: a timeout
    clock.replied(20.0, owed=True, posting=True, shown=3)
    assert clock.expire(20.0 + clock.waited, posting=True, shown=4) is None  # one more shown: slow, not gone
