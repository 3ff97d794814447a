"""The outbox's rules from tables, without sockets: the window after a lost connection, room, settling."""

from __future__ import annotations

import pytest

from _minechat.outbox import MAX_SENDS, RESEND_WINDOW, Outbox


def filled(count: int) -> Outbox:
    outbox = Outbox()
    for number in range(count):
        outbox.add(f"post {number}")
    return outbox


def test_after_a_lost_connection_posts_go_out_a_window_at_a_time() -> None:
    outbox = filled(20)
    assert len(outbox.take_unsent()) == 20
    outbox.rewind()
    assert len(outbox.take_unsent()) == RESEND_WINDOW
    outbox.acknowledge()
    assert len(outbox.take_unsent()) == 1  # one in, one out


@pytest.mark.parametrize("queued", [1, 10, 500])
def test_the_window_opens_again_once_the_posts_lost_in_flight_are_acknowledged(queued: int) -> None:
    outbox = filled(6)
    outbox.take_unsent()
    outbox.rewind()  # six lost in flight
    for number in range(queued):
        outbox.add(f"new {number}")
    acknowledged = 0
    while acknowledged < 6:
        outbox.take_unsent()
        outbox.acknowledge()
        acknowledged += 1
    # The server keeps up again, with posts still queued: all of them go out, not a window's worth.
    outbox.take_unsent()
    assert not outbox.has_unsent
    assert len(outbox) == queued


def test_a_second_loss_before_catching_up_keeps_the_window() -> None:
    outbox = filled(10)
    outbox.take_unsent()
    outbox.rewind()
    outbox.take_unsent()
    outbox.rewind()
    assert len(outbox.take_unsent()) == RESEND_WINDOW


@pytest.mark.parametrize(
    ("how", "delivered", "doubtful"),
    [("seen", 1, 0), ("given up", 0, 1), ("acknowledged", 1, 0)],
)
def test_every_way_out_of_the_outbox_frees_its_room(how: str, delivered: int, doubtful: int) -> None:
    outbox = Outbox(max_posts=1)
    post = outbox.add("only")
    assert outbox.full
    outbox.take_unsent()
    if how == "acknowledged":
        outbox.acknowledge()
    elif how == "seen":
        outbox.note_shown(post)
        outbox.rewind()
    else:
        for _ in range(MAX_SENDS):
            outbox.time_out()
            outbox.rewind()
            outbox.take_unsent()
        outbox.rewind()
    assert not outbox and outbox.roomy and not outbox.full
    assert (outbox.delivered, outbox.doubtful) == (delivered, doubtful)


def test_only_an_echo_of_a_post_awaiting_its_acknowledgement_counts_as_the_server_working() -> None:
    outbox = Outbox()
    first, second = outbox.add("one"), outbox.add("two")
    outbox.take_unsent()
    outbox.acknowledge()
    outbox.note_shown(first)  # a late echo: the server took "one" long ago, it says nothing of "two"
    assert outbox.shown == 0
    outbox.note_shown(second)
    assert outbox.shown == 1
    outbox.note_shown(second)  # the echo of another send: no news
    assert outbox.shown == 1
