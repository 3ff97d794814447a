"""JSON Lines histories: the records, streamed long lines, and what a rotation or a cut leaves."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fake_server import FakeMinechatServer
from helpers import (
    ISO_UTC,
    ODD_OFFSET,
    ODD_ZONE,
    POSIX_ONLY,
    STAMP,
    WAIT,
    RecordingDelays,
    RecordingOut,
    StartReader,
    client_env,
    reader_process,
    stop,
    stop_with_signal,
    wait_for_file,
)

import read_client
from _minechat.jsonl import RECORD_END, JsonLineStamper, format_json_record
from read_client import ReaderSettings

ISO_MSK = "2026-11-28T09:05:00+03:00"


def records_of(text: str) -> list[dict[str, object]]:
    """Parse JSON Lines; every line must be one object."""
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.split("\n")[:-1]]


async def test_jsonl_history_every_record_parses_with_its_fields(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    reader = await start_reader(log_path=path, history_format="jsonl", time_format="%H:%M:%S")
    await server.wait_until(lambda: len(server.readers) == 1)
    await server.broadcast("Boring Eve: привет: всем\nno nick\nEve: \x1b[2J\x9b\u202e\r\n".encode() + b"Eve: caf\xc3\n")
    await reader.out.wait_for_lines(4)
    await server.drop_readers()
    await reader.delays.wait_for_taken(1)
    await server.wait_until(lambda: len(server.readers) == 1)
    await stop(reader)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all({"time", "nick", "text"} <= set(record) for record in records)
    for record in records:
        when = datetime.fromisoformat(record["time"])
        assert when.utcoffset() is not None
        assert abs(when - datetime.now().astimezone()) < timedelta(seconds=WAIT)
    chat = [(record["nick"], record["text"]) for record in records if "event" not in record]
    assert chat == [
        ("Boring Eve", "привет: всем"),
        (None, "no nick"),
        ("Eve", "\x1b[2J\x9b\u202e"),
        ("Eve", "caf\ufffd"),
    ]
    events = [record["event"] for record in records if "event" in record]
    assert events == ["connecting", "connected", "lost", "connecting", "connected"]
    lost = next(record for record in records if record.get("event") == "lost")
    assert lost["error"] == "the server closed the connection"
    assert lost["retry_in"] == 0.0
    assert lost["text"].startswith("connection lost: the server closed the connection; next try in ")
    # Stdout stays text, and escaped.
    shown = reader.out.lines
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d .*", line) for line in shown)
    assert [line[9:] for line in shown] == [
        "Boring Eve: привет: всем",
        "no nick",
        "Eve: \\x1b[2J\\x9b\\u202e",
        "Eve: caf\ufffd",
    ]


async def test_jsonl_record_cut_by_a_rotation_is_closed_and_goes_on_marked(
    server: FakeMinechatServer, start_reader: StartReader, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    reader = await start_reader(log_path=path, history_format="jsonl")
    await server.wait_until(lambda: len(server.readers) == 1)
    forged = b'{"time": "2026-01-01T00:00:00+00:00", "nick": "Admin", "text": "forged"}'
    await server.broadcast(b"Eve: " + b"a" * (3 * 64 * 1024) + forged)
    await wait_for_file(path, lambda data: data.endswith(b"a" * 100), WAIT)
    path.rename(tmp_path / "chat.jsonl.1")
    await server.broadcast(b"\nBob: after\n")
    await wait_for_file(path, lambda data: b"Bob" in data, WAIT)
    await stop(reader)
    moved = [json.loads(line) for line in (tmp_path / "chat.jsonl.1").read_text(encoding="utf-8").splitlines()]
    fresh = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert moved[-1]["nick"] == "Eve" and set(moved[-1]["text"]) == {"a"}
    assert fresh[0]["event"] == "file_reopened"
    assert fresh[1]["continued"] is True and fresh[1]["nick"] is None
    assert moved[-1]["text"] + fresh[1]["text"] == "a" * (3 * 64 * 1024) + forged.decode()
    assert (fresh[2]["nick"], fresh[2]["text"]) == ("Bob", "after")


@POSIX_ONLY
async def test_jsonl_times_carry_the_offset_and_the_stop_is_an_event(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    async with reader_process(
        server,
        path,
        "--format",
        "jsonl",
        cwd=tmp_path,
        env=client_env(TZ=ODD_ZONE),
    ) as process:
        try:
            await server.broadcast(b"Eve: hi\n")
            await wait_for_file(path, lambda data: b'"nick": "Eve"' in data, WAIT)
        finally:
            code = await stop_with_signal(process, signal.SIGTERM)
    assert code == -signal.SIGTERM
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # Local time of the client's zone (UTC+13:37, which no caller's zone is), with its offset.
    assert all(datetime.fromisoformat(record["time"]).utcoffset() == ODD_OFFSET for record in records)
    assert all(record["time"].endswith("+13:37") for record in records)
    assert [record["text"] for record in records if "event" not in record] == ["hi"]
    assert {key: records[-1][key] for key in ("nick", "text", "event", "signal")} == {
        "nick": None, "text": "stopped by SIGTERM", "event": "stopped", "signal": "SIGTERM",
    }  # fmt: skip
    # Stdout stays text.
    assert re.fullmatch(STAMP + "Eve: hi\n", (await process.stdout.read()).decode())


async def test_jsonl_history_cut_inside_a_record_is_one_record_per_line_after_a_restart(
    server: FakeMinechatServer, tmp_path: Path
) -> None:
    history = tmp_path / "chat.jsonl"
    stamper = JsonLineStamper()
    cut = stamper.feed(b"Eve: " + b"z" * (100 * 1024), ISO_UTC)  # the start of a long line, as streamed
    assert cut.startswith('{"time"') and not cut.endswith("\n")
    history.write_text(cut, encoding="utf-8")
    settings = ReaderSettings("127.0.0.1", server.read_port, history, WAIT, False, history_format="jsonl", backlog=0)
    out = RecordingOut()
    task = asyncio.create_task(read_client.run(settings, out, RecordingDelays()))
    try:
        await server.wait_until(lambda: len(server.readers) == 1)
        await server.broadcast(b"Bob: after the restart\n")
        await wait_for_file(history, lambda data: b"after the restart" in data, WAIT)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    bad = []
    for line in history.read_text(encoding="utf-8").splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad.append(line[:60])
    assert not bad, bad


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"Eve: hi\n", [("Eve", "hi")]),
        (b"Boring Eve: a: b\n", [("Boring Eve", "a: b")]),
        (b"no nick here\n", [(None, "no nick here")]),
        (b"Eve:no space\n", [(None, "Eve:no space")]),
        ("Ева: привет\r\n".encode(), [("Ева", "привет")]),
        (b"A: caf\xc3\nB: \xff\n", [("A", "caf\ufffd"), ("B", "\ufffd")]),
        (b'Q: "quoted" \\ back\n', [("Q", '"quoted" \\ back')]),
        (b"E: \x1b[2J\x00\x07 lone\rcr\n", [("E", "\x1b[2J\x00\x07 lone\rcr")]),
        ("C: \u009b31m \u202eevil \u2028sep \x7f\n".encode(), [("C", "\u009b31m \u202eevil \u2028sep \x7f")]),
    ],
)
def test_json_records_keep_the_text_and_split_the_nick(data: bytes, expected: list[tuple[str | None, str]]) -> None:
    text = JsonLineStamper().feed(data, ISO_MSK)
    records = records_of(text)
    assert [(record["nick"], record["text"]) for record in records] == expected
    assert all(record["time"] == ISO_MSK and set(record) == {"time", "nick", "text"} for record in records)
    # JSON's escapes, and ours for what it leaves raw, keep the file free of anything a terminal acts on.
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", text[:-1].replace("\n", ""))
    assert text.count("\n") == len(expected)


def test_json_long_line_is_streamed_as_one_record() -> None:
    stamper = JsonLineStamper(max_piece=8)
    pieces = [
        stamper.feed(b"Eve: 0123456789", "T1"),
        stamper.feed("абвгдеёжзий".encode(), "T2"),
        stamper.feed(b"end\nBob: after\nopen", "T3"),
    ]
    # While the line comes in, what is given out is an open record; memory holds at most a piece.
    assert pieces[0].startswith('{"time": "T1", "nick": "Eve", "text": "') and "\n" not in pieces[0]
    probe = JsonLineStamper(max_piece=8)  # fed the same, then flushed: what the stamper holds now
    probe.feed(b"Eve: 0123456789", "T1")
    probe.feed("абвгдеёжзий".encode(), "T2")
    assert len(probe.flush("T2").encode()) - len(RECORD_END) <= 8 * 2
    text = "".join(pieces) + stamper.flush("T4")
    assert records_of(text) == [
        {"time": "T1", "nick": "Eve", "text": "0123456789абвгдеёжзийend"},
        {"time": "T3", "nick": "Bob", "text": "after"},
        {"time": "T4", "nick": None, "text": "open"},
    ]


def test_json_flush_closes_a_streamed_record() -> None:
    stamper = JsonLineStamper(max_piece=4)
    text = stamper.feed(b"x: 123456789", "T1") + stamper.flush("T2")
    assert records_of(text) == [{"time": "T1", "nick": "x", "text": "123456789"}]


def test_json_note_record() -> None:
    record = json.loads(format_json_record(ISO_MSK, "connected to h:5000", event="connected", address="h:5000"))
    assert record == {
        "time": ISO_MSK,
        "nick": None,
        "text": "connected to h:5000",
        "event": "connected",
        "address": "h:5000",
    }
