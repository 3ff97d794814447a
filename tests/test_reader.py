"""read_client against the fake server: what reaches stdout and the history file, byte for byte."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fake_server import FakeMinechatServer
from helpers import StartReader, chat_of, read_history, running_reader, status_of

from _minechat.stamping import format_stamp


async def test_lines_are_stamped_in_history_and_stdout(server: FakeMinechatServer, start_reader: StartReader) -> None:
    before = datetime.now()
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast("Boring Ева: привет\nBrave Bob: hi\n".encode())
    lines = await reader.out.wait_for_lines(2)
    after = datetime.now()
    # The stamp is the minute of receipt: the one before or after, should a minute turn meanwhile.
    stamps = {format_stamp(before), format_stamp(after)}
    assert [line.split(" ", 2)[2] for line in lines] == ["Boring Ева: привет", "Brave Bob: hi"]
    assert all(" ".join(line.split(" ", 2)[:2]) in stamps for line in lines)
    history = read_history(reader.path)
    assert history[-2:] == lines
    assert status_of(history) == [
        f"*** connecting to 127.0.0.1:{server.read_port}",
        f"*** connected to 127.0.0.1:{server.read_port}",
    ]


async def test_invalid_utf8_is_replaced_and_kept(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader()
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"A: caf\xc3\nB: \xff\xfeok\n")
    await reader.out.wait_for_lines(2)
    assert chat_of(read_history(reader.path)) == ["A: caf\ufffd", "B: \ufffd\ufffdok"]


async def test_text_that_only_starts_like_the_greeting_is_chat(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.trickle_interval = 0.001  # byte by byte: the head is held across many reads
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"Hello %username%")
        await server.broadcast(b"! is my name\nBob: hi\n")
        await reader.out.wait_for_lines(2)
    assert chat_of(read_history(path)) == ["Hello %username%! is my name", "Bob: hi"]


async def test_a_greeting_prefix_cut_by_the_close_is_kept(server: FakeMinechatServer, tmp_path: Path) -> None:
    server.send_then_close = b"Hello"
    path = tmp_path / "chat.log"
    async with running_reader(server, path) as reader:
        await reader.delays.wait_for_taken(1)
    assert chat_of(read_history(path))[0] == "Hello"
