"""Every end says what was posted: after some posts went through, an error comes after the same summary."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fake_server import ConnectionPlan, FakeMinechatServer
from helpers import TOKEN, error_lines, run_sender_process, send_to_end, settings_for

from _minechat.posting import RESUME_TRIES
from chat_io import EXIT_PROTOCOL, EXIT_UNKNOWN_TOKEN, ConnectionFailed

MESSAGES = [f"post {number}" for number in range(1, 11)]


pytestmark = pytest.mark.usefixtures("account")  # conftest's: Focused Loyd, with TOKEN


async def post_all(server: FakeMinechatServer, tmp_path: Path) -> tuple[int, list[str]]:
    argv = ["--token", TOKEN, *(part for message in MESSAGES for part in ("--message", message))]
    code, _, err = await run_sender_process(server.write_port, tmp_path, *argv, stdin=None)
    return code, error_lines(err)


@pytest.mark.parametrize(
    ("plans", "posted", "code", "error"),
    [
        ([ConnectionPlan(posts=5, garble=True)], 5, EXIT_PROTOCOL, "expected the acknowledgement of message 6"),
        ([ConnectionPlan(posts=8, revoke=True)], 8, EXIT_UNKNOWN_TOKEN, "does not know the token"),
    ],
    ids=["protocol error", "token revoked"],
)
async def test_an_error_after_some_posts_comes_after_the_summary(
    server: FakeMinechatServer, tmp_path: Path, plans: list[ConnectionPlan], posted: int, code: int, error: str
) -> None:
    server.plans.extend(plans)
    exit_code, lines = await post_all(server, tmp_path)
    assert exit_code == code
    assert [post.acknowledged for post in server.posts][:posted] == [True] * posted
    summary = [line for line in lines if " posted " in line]
    assert len(summary) == 1
    unsent = len(MESSAGES) - posted
    assert summary[0].endswith(
        f" posted {posted} messages as Focused Loyd; {unsent} more not acknowledged, so maybe not posted"
    )
    assert lines.index(summary[0]) < len(lines) - 1 and error in lines[-1]  # the summary, then the error


async def test_giving_up_after_some_posts_comes_after_the_summary(
    server: FakeMinechatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # In-process, for its tiny retry delays; the process would log the error after these records.
    caplog.set_level(logging.INFO, logger="send_client")
    server.plans.extend([ConnectionPlan(posts=5), *(ConnectionPlan(refuse=True) for _ in range(RESUME_TRIES + 1))])
    argv = ["--token", TOKEN, *(part for message in MESSAGES for part in ("--message", message))]
    with pytest.raises(ConnectionFailed, match=f"gave up after {RESUME_TRIES} tries"):
        await send_to_end(settings_for(server, tmp_path, *argv), None)
    assert caplog.records[-1].getMessage() == (
        "posted 5 messages as Focused Loyd; 5 more not acknowledged, so maybe not posted"
    )
