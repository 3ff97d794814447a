"""The witness is never fooled: chats that show look-alikes of our posts, and two senders under one nickname."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_server import ConnectionPlan, CuttingProxy, FakeMinechatServer
from helpers import TOKEN, RecordingDelays, StdinPipe, client_process, run_sender, settings_for

import send_client
from _minechat.sender_settings import SenderSettings

NICKNAME = "Focused Loyd"
Shape = Callable[[str, str], list[str]]


def impostor(nickname: str, text: str) -> list[str]:
    """Another account with our nickname chats along, and says what our next post says."""
    return (
        [f"{nickname}: {text}", f"{nickname}: what's up", f"{nickname}: yo"]
        if text == "hi"
        else [f"{nickname}: {text}"]
    )


# Each chat shows the first post in a way that looks like the second, which never reaches the server.
LOOKALIKES: dict[str, tuple[Shape, tuple[str, str]]] = {
    "trims trailing spaces": (lambda nick, text: [f"{nick}: {text.rstrip()}"], ("hello  ", "hello")),
    "collapses runs of spaces": (lambda nick, text: [f"{nick}: {re.sub(' +', ' ', text)}"], ("a  b", "a b")),
    "cuts long lines": (lambda nick, text: [f"{nick}: {text[:5]}"], ("hello world", "hello")),
    "shows each post twice": (lambda nick, text: [f"{nick}: {text}"] * 2, ("same", "same")),
    "has another author of our nickname": (impostor, ("hi", "yo")),
}


@pytest.mark.parametrize("chat", list(LOOKALIKES))
async def test_a_post_that_never_arrived_is_sent_again_whatever_the_chat_shows(
    server: FakeMinechatServer, tmp_path: Path, chat: str
) -> None:
    shape, (first, second) = LOOKALIKES[chat]
    server.add_account(NICKNAME, TOKEN)
    server.shown_as = shape
    # The first connection acknowledges the first post and hangs up before reading the second.
    server.plans.append(ConnectionPlan(posts=1))
    settings = settings_for(server, tmp_path, "--token", TOKEN, "--message", first, "--message", second, watch=True)
    await run_sender(settings)
    taken = [" | ".join(post.lines) for post in server.posts if post.acknowledged]
    assert taken == [first, second]  # the second is posted, not lost


LINES = 300
RESET_SHARE = 0.05  # of connections


def flaky_plans(rng: random.Random, count: int) -> list[ConnectionPlan]:
    """Connections of which about RESET_SHARE are reset after a few posts, the rest serve normally."""
    return [
        ConnectionPlan(posts=rng.randrange(1, 20), reset=True)
        if rng.random() < RESET_SHARE * 10
        else ConnectionPlan(posts=rng.randrange(20, 60))
        for _ in range(count)
    ]


async def stream(settings: SenderSettings, lines: list[str], lag: float = 0.0) -> send_client.Sender:
    """Relay lines through a sender, a few at a time, starting after lag seconds; return it once it has ended."""
    await asyncio.sleep(lag)
    stdin = StdinPipe()
    sender = send_client.make_sender(settings, stdin.reader, RecordingDelays())
    task = asyncio.ensure_future(sender.run())
    try:
        for start in range(0, len(lines), 10):
            await stdin.write("".join(f"{line}\n" for line in lines[start : start + 10]).encode())
            await asyncio.sleep(0.005)
        stdin.end()
        await asyncio.wait_for(asyncio.shield(task), 20)
    finally:
        task.cancel()
        stdin.close()
    return sender


@pytest.mark.slow
@pytest.mark.parametrize("accounts", [1, 2], ids=["one account", "two accounts"])
async def test_two_senders_under_one_nickname_lose_no_post(
    server: FakeMinechatServer, tmp_path: Path, accounts: int
) -> None:
    tokens = [TOKEN, TOKEN.replace("5210", "6210")][:accounts]
    for token in tokens:
        server.add_account(NICKNAME, token)
    server.plans.extend(flaky_plans(random.Random(19), 400))
    lines = [f"line {number}" for number in range(LINES)]
    senders = []
    for index in range(2):
        folder = tmp_path / str(index)
        folder.mkdir()
        token = tokens[index % accounts]
        senders.append(settings_for(server, folder, "--token", token, "--message", "-", watch=True))
    await asyncio.gather(*(stream(settings, lines, lag=0.05 * index) for index, settings in enumerate(senders)))
    copies = Counter(" | ".join(post.lines) for post in server.posts)
    lost = sum(max(0, 2 - copies[line]) for line in lines)
    assert lost == 0


# Seeds of the cutting proxy under which the old witness lost posts of two real sender processes.
PROCESS_SEEDS = (2, 6)
PROCESS_WAIT = 120.0  # a stream of 300 lines through cut connections, with the clients' real retry delays


async def stream_process(port: int, read_port: int, token: str, cwd: Path, lines: list[str]) -> int:
    """Relay lines through a send_client process, ten at a time; return its exit code once it has ended."""
    argv = ("--read-port", str(read_port), "--token", token, "--message", "-")
    async with client_process(
        "send_client.py", *argv, port=port, cwd=cwd, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as process:
        assert process.stdin is not None
        for start in range(0, len(lines), 10):
            process.stdin.write("".join(f"{line}\n" for line in lines[start : start + 10]).encode())
            await process.stdin.drain()
            await asyncio.sleep(0.01)
        process.stdin.close()
        return await asyncio.wait_for(process.wait(), PROCESS_WAIT)


@pytest.mark.slow
@pytest.mark.parametrize("seed", PROCESS_SEEDS)
async def test_two_sender_processes_under_one_account_through_cut_connections_lose_no_post(
    server: FakeMinechatServer, tmp_path: Path, seed: int
) -> None:
    server.add_account(NICKNAME, TOKEN)
    lines = [f"line {number}" for number in range(LINES)]
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    # About one connection in twenty is cut: a budget of some twenty posts' bytes on average.
    async with CuttingProxy("127.0.0.1", server.write_port, 20 * LINES, random.Random(seed)) as proxy:
        codes = await asyncio.gather(
            *(stream_process(proxy.port, server.read_port, TOKEN, folder, lines) for folder in folders)
        )
    assert codes == [0, 0]
    copies = Counter(" | ".join(post.lines) for post in server.posts)
    assert [line for line in lines if copies[line] < 2] == []  # each process posted every line at least once
