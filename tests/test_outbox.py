"""The outbox's rules from tables, without sockets: the window after a lost connection, room, settling."""

from __future__ import annotations

import pytest

from _minechat.outbox import MAX_SENDS, RESEND_WINDOW, Outbox, Post


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
    third = outbox.add("three")
    outbox.take_unsent()
    outbox.note_shown(third)  # each post shown while awaited counts: the server works through ours
    assert outbox.shown == 2


# --- room by bytes: a long post leaves the outbox, a short one stays --------------------------------------

LONG, SHORT = "l" * 60, "s"  # 62 and 3 bytes on the wire
ROOM = 100  # bytes: both fit, and the short one alone is under half of it


def settle_the_long_one(outbox: Outbox, long: Post, how: str) -> None:
    """Take the long post out of the outbox one way, the short one still waiting."""
    outbox.take_unsent()
    if how == "acknowledged":
        outbox.acknowledge()
    elif how == "seen in flight":
        outbox.note_shown(long)
        outbox.rewind()
    elif how == "seen while waiting to go again":
        outbox.rewind()
        outbox.note_shown(long)
        outbox.take_unsent()
    else:  # given up: every connection lost while it, the oldest, awaited its acknowledgement
        for _ in range(MAX_SENDS):
            outbox.lose_connection()
            outbox.rewind()
            outbox.take_unsent()


@pytest.mark.parametrize("how", ["acknowledged", "seen in flight", "seen while waiting to go again", "given up"])
def test_a_post_leaving_the_outbox_frees_its_own_bytes(how: str) -> None:
    outbox = Outbox(max_bytes=ROOM)
    long = outbox.add(LONG)
    outbox.add(SHORT)
    assert len(long.data) == 62 and not outbox.full and not outbox.roomy
    settle_the_long_one(outbox, long, how)
    assert len(outbox) == 1
    assert outbox.roomy and not outbox.full  # only the short post's 3 bytes are left
    for number in range(ROOM // 2 // 3 - 1):  # room for more posts: up to half of ROOM again
        outbox.add(f"{number % 10}")
    assert outbox.roomy
    outbox.add("9")
    assert not outbox.roomy and not outbox.full


# --- the window after a lost connection, and what is counted as going again ------------------------------


def test_the_window_holds_until_the_last_post_lost_in_flight_is_settled() -> None:
    outbox = filled(10)
    outbox.take_unsent()
    outbox.rewind()  # ten lost in flight
    assert len(outbox.take_unsent()) == RESEND_WINDOW
    for _ in range(RESEND_WINDOW):  # all in flight acknowledged, six lost ones still to go
        outbox.acknowledge()
    assert len(outbox.take_unsent()) == RESEND_WINDOW


def test_the_window_holds_while_the_last_lost_post_is_in_flight() -> None:
    outbox = filled(3)
    outbox.take_unsent()
    outbox.rewind()
    assert len(outbox.take_unsent()) == 3  # all three lost ones in flight again, nothing queued behind
    outbox.acknowledge()  # the first: two lost ones still in flight
    for number in range(5):
        outbox.add(f"new {number}")
    assert len(outbox.take_unsent()) == RESEND_WINDOW - 2


@pytest.mark.parametrize(("lost", "left"), [(3, 0), (6, 6 - RESEND_WINDOW)])
def test_posts_still_to_go_again_are_counted_down_as_they_go(lost: int, left: int) -> None:
    outbox = filled(lost)
    outbox.take_unsent()
    assert outbox.rewind() == lost and outbox.rewound == lost
    outbox.take_unsent()
    assert outbox.rewound == left


def test_posts_only_the_chat_showed_go_again_once_it_is_no_witness() -> None:
    outbox = Outbox()
    settled, in_flight, waiting = (outbox.add(text) for text in ("one", "two", "three"))
    outbox.take_unsent()
    outbox.note_shown(settled)
    outbox.rewind()  # "one" leaves, settled by the chat alone; the others go again
    assert (len(outbox), outbox.seen_only) == (2, 1)
    outbox.take_unsent()
    outbox.note_shown(in_flight)
    # The chat turns out to be no witness: what it alone settled, or would settle, goes out again.
    assert outbox.recall_seen() == 1  # "one" goes again; "two" waits for its acknowledgement like "three"
    assert (len(outbox), outbox.seen_only, settled.seen, in_flight.seen) == (3, 0, False, False)
    assert outbox.rewind() == 2  # the two in flight, not settled by the chat any more
    assert outbox.rewound == 3
    assert outbox.take_unsent() == [settled, in_flight, waiting]  # in the order they were added
    assert outbox.rewound == 0
    assert outbox.recall_seen() == 0


def test_an_acknowledged_post_is_never_recalled() -> None:
    outbox = Outbox()
    post = outbox.add("one")
    outbox.take_unsent()
    outbox.note_shown(post)
    outbox.acknowledge()
    assert outbox.recall_seen() == 0
    assert not outbox and outbox.acknowledged == 1
