"""Stamping the reader's lines: LineStamper, the clock, split_strftime and the formatted history lines."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from fake_server import FakeMinechatServer
from helpers import ISO_FORMAT, ISO_STAMP, WAIT, StartReader


async def test_time_format_sets_the_stamp(server: FakeMinechatServer, start_reader: StartReader) -> None:
    reader = await start_reader(time_format=ISO_FORMAT)
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast(b"Eve: hi\n")
    (line,) = await reader.out.wait_for_lines(1)
    assert re.fullmatch(ISO_STAMP + " Eve: hi", line)
    stamp = datetime.strptime(line.split(" ")[0], ISO_FORMAT)
    assert abs(stamp - datetime.now().astimezone()) < timedelta(seconds=WAIT)
    history = reader.settings.log_path.read_text(encoding="utf-8").splitlines()
    assert history[-1] == line
    assert all(re.match(ISO_STAMP + r" \*\*\* ", note) for note in history[:-1])
