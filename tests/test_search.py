"""--search: which lines match (chat only, as shown), what is printed around them, across every file of a history."""

from __future__ import annotations

import gzip
import os
import random
import re
from datetime import datetime
from pathlib import Path

import pytest
from helpers import query_main

from _minechat.archive import files_in_range, read_blocks
from _minechat.entries import JsonLines, TextLines
from _minechat.history import HistoryPattern
from _minechat.jsonl import format_json_record
from _minechat.search import GROUP_SEPARATOR, ContextPrinter, Matcher, Query, case_variants, compile_pattern
from chat_io import EXIT_FILE, EXIT_OK, EXIT_USAGE

# --- matching, from tables -------------------------------------------------------------------------------

TEXT_BLOCK = (
    "[05.12.26 10:00] *** connected to minechat.dvmn.org:5000 (hello is no chat)\n"
    "[05.12.26 10:01] Eve: hello world\n"
    "[05.12.26 10:02] Bob: Hello there\n"
    "[05.12.26 10:03] Eve: say \\x1b[31m\n"
    "[05.12.26 10:04] server message without a nick, hello\n"
    "[05.12.26 10:05] Eve: bye\n"
)


@pytest.mark.parametrize(
    ("pattern", "nick", "since", "until", "expected"),
    [
        ("hello", None, None, None, [1, 2, 4]),  # lower case: any case; the note is no match
        ("Hello", None, None, None, [2]),  # an upper-case letter: exact case
        (r"\Shello", None, None, None, []),  # \S is no upper-case letter
        ("hello", "Eve", None, None, [1]),  # exact nickname
        ("hello", "eve", None, None, []),
        ("^Eve: ", None, None, None, [1, 3, 5]),  # anchored at the shown line, after the stamp
        ("bye$", None, None, None, [5]),
        (r"\\x1b\[31m", None, None, None, [3]),  # escaped text, as the reader shows it
        ("10:0", None, None, None, []),  # the stamp is not searched
        ("e", None, "05.12.26 10:02", "05.12.26 10:04", [2, 3]),
        ("", None, None, None, [1, 2, 3, 4, 5]),
    ],
)
def test_text_lines_that_match(
    pattern: str, nick: str | None, since: str | None, until: str | None, expected: list[int]
) -> None:
    moments = [None if text is None else datetime.strptime(text, "%d.%m.%y %H:%M") for text in (since, until)]
    query = Query(compile_pattern(pattern), nick, moments[0], moments[1])
    assert Matcher(query, TextLines()).find(TEXT_BLOCK.encode()) == expected


def json_block() -> str:
    return "".join(
        [
            format_json_record("2026-12-05T10:00:00+00:00", "connected to x:5000 hello", event="connected"),
            format_json_record("2026-12-05T10:01:00+00:00", "hello world", "Eve"),
            format_json_record("2026-12-05T10:02:00+00:00", 'a "quoted" Hello', "Bob"),
            format_json_record("2026-12-05T10:03:00+00:00", "say \x1b[31m", "Eve"),
            format_json_record("2026-12-05T10:04:00+00:00", "server message, hello"),
            '{"time": "2026-12-05T10:05:00+00:00", "nick": "Eve", "text": "cut short\n',  # a damaged record
        ]
    )


@pytest.mark.parametrize(
    ("pattern", "nick", "expected"),
    [
        ("hello", None, [1, 2, 4]),
        ('"quoted"', None, [2]),  # matched unescaped, not as \"
        (r"\\x1b\[31m", None, [3]),  # a control character as the reader shows it
        ("time", None, []),  # the keys are no text
        ("^Bob: ", None, [2]),
        ("Bob: a", None, [2]),  # across the nick and the text, which the record holds apart
        ("b: a ", None, [2]),
        (' a "', None, [2]),
        ("hello", "Eve", [1]),
    ],
)
def test_json_lines_that_match(pattern: str, nick: str | None, expected: list[int]) -> None:
    query = Query(compile_pattern(pattern), nick)
    assert Matcher(query, JsonLines()).find(json_block().encode()) == expected


def test_json_time_range_is_local_time() -> None:
    block = format_json_record("2026-12-05T10:01:00+00:00", "hello", "Eve")
    local = datetime.fromisoformat("2026-12-05T10:01:00+00:00").astimezone().replace(tzinfo=None)
    pattern = compile_pattern("hello")
    assert Matcher(Query(pattern, since=local), JsonLines()).find(block.encode()) == [0]
    assert Matcher(Query(pattern, until=local), JsonLines()).find(block.encode()) == []


# --- context, as grep -C ----------------------------------------------------------------------------------


def grep_context(files: list[list[str]], hits: list[set[int]], context: int) -> list[str]:
    """What grep -h -C prints for these files and matching lines: the reference."""
    out: list[str] = []
    printed_before = False
    for lines, matching in zip(files, hits, strict=True):
        shown = sorted(
            {n for hit in matching for n in range(max(0, hit - context), min(len(lines), hit + context + 1))}
        )
        previous = None
        for number in shown:
            if context and printed_before and (previous is None or number != previous + 1):
                out.append(GROUP_SEPARATOR)
            out.append(lines[number])
            previous = number
            printed_before = True
    return out


@pytest.mark.parametrize("seed", range(40))
def test_context_across_blocks_is_what_grep_prints(seed: int) -> None:
    rng = random.Random(seed)
    context = rng.choice([0, 1, 2, 5])
    files = [[f"f{f} line {n}" for n in range(rng.randint(0, 30))] for f in range(rng.randint(1, 3))]
    hits = [{n for n in range(len(lines)) if rng.random() < 0.15} for lines in files]
    printer = ContextPrinter(context)
    out: list[str] = []
    for lines, matching in zip(files, hits, strict=True):
        start = 0
        while start < len(lines):  # blocks of random sizes, as a file is read
            end = min(len(lines), start + rng.randint(1, 8))
            block = "".join(line + "\n" for line in lines[start:end])
            out += printer.block(block, sorted(n - start for n in matching if start <= n < end))
            start = end
        printer.end_file()
    assert out == grep_context(files, hits, context)


# --- the whole archive, from the command line -------------------------------------------------------------


def write_file(path: Path, text: str, age_days: int) -> Path:
    """Write a history file (gzipped if its name says so), last modified age_days ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    stamp = datetime(2026, 12, 5, 12).timestamp() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def text_day(day: int, lines: list[str]) -> str:
    return "".join(f"[{day:02d}.12.26 {10 + n:02d}:00] {line}\n" for n, line in enumerate(lines))


def json_day(day: int, lines: list[str]) -> str:
    records = []
    for n, line in enumerate(lines):
        when = f"2026-12-{day:02d}T{10 + n:02d}:00:00"
        if line.startswith("*** "):
            records.append(format_json_record(when, line[4:], event="connected"))
        else:
            nick, _, text = line.partition(": ")
            records.append(format_json_record(when, text, nick))
    return "".join(records)


DAYS = {
    1: ["*** connected to x:5000", "Eve: needle one", "Bob: hay"],
    2: ["Bob: needle two", "Eve: hay"],
    3: ["Eve: hay", "Eve: NEEDLE three", "Bob: hay"],
    4: ["Bob: hay", "Eve: needle four"],
}


def make_archive(folder: Path, dated: bool, history_format: str) -> str:
    """Write four days of history: the oldest gzipped; return the --log_path."""
    make = json_day if history_format == "jsonl" else text_day
    if dated:
        for day, lines in DAYS.items():
            name = f"2026-12-{day:02d}.txt" + (".gz" if day == 1 else "")
            write_file(folder / "logs" / name, make(day, lines), 5 - day)
        return str(folder / "logs" / "%Y-%m-%d.txt")
    names = {1: "chat_logs.txt.3.gz", 2: "chat_logs.txt.2", 3: "chat_logs.txt.1", 4: "chat_logs.txt"}
    for day, lines in DAYS.items():
        write_file(folder / names[day], make(day, lines), 5 - day)
    write_file(folder / "chat_logs.txt.bak", make(9, ["Eve: needle not of the history"]), 0)
    return str(folder / "chat_logs.txt")


def texts(out: str, history_format: str) -> list[str]:
    """Return the text of each printed line, either format."""
    if history_format == "jsonl":
        return [re.search(r'"text": "([^"]*)"', line).group(1) for line in out.splitlines()]  # type: ignore[union-attr]
    return [line.split(": ", 1)[1] for line in out.splitlines()]


FORMATS = ["text", "jsonl"]


@pytest.mark.parametrize("history_format", FORMATS)
@pytest.mark.parametrize("dated", [False, True], ids=["rotated", "dated"])
def test_search_reads_every_file_oldest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history_format: str, dated: bool
) -> None:
    log_path = make_archive(tmp_path, dated, history_format)
    code, out, err = query_main(["--log_path", log_path, "--format", history_format, "--search", "needle"], capsys)
    assert code == EXIT_OK
    assert texts(out, history_format) == ["needle one", "needle two", "NEEDLE three", "needle four"]
    assert "4 matching lines in 4 files" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("history_format", FORMATS)
def test_search_prints_lines_as_the_history_holds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history_format: str
) -> None:
    log_path = make_archive(tmp_path, True, history_format)
    code, out, _ = query_main(["--log_path", log_path, "--format", history_format, "--search", "two"], capsys)
    assert code == EXIT_OK
    expected = (json_day if history_format == "jsonl" else text_day)(2, DAYS[2][:1])
    assert out == expected


@pytest.mark.parametrize("history_format", FORMATS)
@pytest.mark.parametrize("dated", [False, True], ids=["rotated", "dated"])
def test_search_with_nick_range_and_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], history_format: str, dated: bool
) -> None:
    log_path = make_archive(tmp_path, dated, history_format)
    argv = ["--log_path", log_path, "--format", history_format, "--search", "needle"]
    _, out, _ = query_main([*argv, "--nick", "Eve"], capsys)
    assert texts(out, history_format) == ["needle one", "NEEDLE three", "needle four"]
    _, out, _ = query_main([*argv, "--since", "2026-12-02", "--until", "2026-12-03 10:59"], capsys)
    assert texts(out, history_format) == ["needle two"]
    _, out, _ = query_main([*argv, "--since", "2026-12-03 11:00", "--until", "2026-12-03"], capsys)
    assert texts(out, history_format) == ["NEEDLE three"]
    _, out, err = query_main([*argv, "--context", "1", "--until", "2026-12-02"], capsys)
    lines = out.splitlines()
    assert lines[0].endswith("connected to x:5000") or '"event": "connected"' in lines[0]  # notes are context
    assert lines[3] == GROUP_SEPARATOR  # each file is apart, as grep -C keeps files apart
    assert texts("\n".join(lines[1:3] + lines[4:]), history_format) == ["needle one", "hay", "needle two", "hay"]
    assert "2 matching lines" in err


def test_search_of_an_empty_archive_finds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = query_main(["--log_path", str(tmp_path / "chat_logs.txt"), "--search", "x"], capsys)
    assert (code, out) == (EXIT_OK, "")
    assert "0 matching lines in 0 files" in err
    assert not (tmp_path / ".chat_logs.txt.read_client.lock").exists()  # no lock taken, no file made
    assert not (tmp_path / "chat_logs.txt").exists()


def test_a_damaged_gzip_file_is_exit_6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log_path = make_archive(tmp_path, True, "text")
    (tmp_path / "logs" / "2026-12-01.txt.gz").write_bytes(gzip.compress(b"[01.12.26 10:00] Eve: x\n")[:-12])
    code, _, err = query_main(["--log_path", log_path, "--search", "needle"], capsys)
    assert code == EXIT_FILE
    assert "cannot read history file" in err
    assert "2026-12-01.txt.gz" in err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--search", "a("], "not a regular expression"),
        (["--search", "a", "--since", "yesterday"], "not YYYY-MM-DD"),
        (["--search", "a", "--since", "2026-12-05", "--until", "2026-12-04"], "--since is after --until"),
        (["--nick", "Eve"], "--nick goes with --search"),
        (["--context", "2"], "--context goes with --search"),
        (["--search", "a", "--context", "-1"], "less than 0"),
        (["--until", "2026-12-04"], "go with --search or --coverage"),
        (["--search", "a", "--coverage"], "give one of them"),
    ],
)
def test_bad_values_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        query_main(["--log_path", str(tmp_path / "chat.txt"), *argv], capsys)
    assert stop.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert complaint in err
    assert err.count("\n") == 1


# --- case: the bytes looked for first never miss what re.IGNORECASE matches -----------------------------


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("погода", "ПОГОДА"),
        ("погода", "ПоГоДа"),
        ("ёлка", "ЁЛКА"),
        ("эхо", "ЭХО"),
        ("ѐ", "Ѐ"),
        ("straße", "STRAßE"),
        ("çà", "ÇÀ"),
        ("σοφία", "ΣΟΦΊΑ"),
        ("σ", "ς"),  # re's own equivalences: found by re, as the block holds an odd case
        ("kelvin", "\u212aelvin"),  # the Kelvin sign
        ("sun", "\u017fun"),  # the long s
        ("вода", "\u1c80ода"),  # Cyrillic small rounded ve
        ("release 1", "RELEASE 1.4"),
        ("colou?r", "COLOR"),
        ("a.c", "ABC"),
    ],
)
def test_a_pattern_without_capitals_finds_every_case(pattern: str, text: str) -> None:
    block = f"[05.12.26 10:00] Eve: {text}\n[05.12.26 10:01] Eve: nothing\n".encode()
    assert re.search(pattern, text, re.IGNORECASE)
    assert Matcher(Query(compile_pattern(pattern)), TextLines()).find(block) == [0]
    json = format_json_record("2026-12-05T10:00:00+00:00", text, "Eve").encode()
    assert Matcher(Query(compile_pattern(pattern)), JsonLines()).find(json) == [0]


def test_case_variants_are_those_re_takes() -> None:
    every = "".join(map(chr, (*range(0xD800), *range(0xE000, 0x110000))))
    letters = [
        chr(code) for code in (*range(0x41, 0x5B), *range(0x61, 0x7B), *range(0x391, 0x3CA), *range(0x400, 0x460))
    ]
    for char in letters:
        assert case_variants(char) == set(re.findall(re.escape(char), every, re.IGNORECASE)), char


def test_a_pattern_with_capitals_keeps_its_case() -> None:
    block = b"[05.12.26 10:00] Eve: hello\n[05.12.26 10:01] Eve: Hello\n"
    assert Matcher(Query(compile_pattern("Hello")), TextLines()).find(block) == [1]


def test_a_time_range_reads_only_the_dated_files_that_can_hold_it(tmp_path: Path) -> None:
    pattern = HistoryPattern(tmp_path / "%Y-%m-%d.txt")
    files = [tmp_path / f"2026-12-0{day}.txt" for day in (1, 2, 3, 4)]
    assert files_in_range(pattern, files, datetime(2026, 12, 2, 12), datetime(2026, 12, 3)) == files[1:2]
    assert files_in_range(pattern, files, datetime(2026, 12, 2), None) == files[1:]
    assert files_in_range(pattern, files, None, datetime(2026, 12, 3, 0, 1)) == files[:3]
    assert files_in_range(HistoryPattern(tmp_path / "chat.txt"), files, datetime(2026, 12, 3), None) == files


@pytest.mark.parametrize("block_bytes", [7, 1000, 4 << 20])
def test_gzip_files_of_several_members_are_read_whole(tmp_path: Path, block_bytes: int) -> None:
    first = b"".join(b"[05.12.26 10:00] Eve: line %d\n" % number for number in range(20_000))
    path = tmp_path / "chat.txt.1.gz"
    path.write_bytes(gzip.compress(first) + gzip.compress(b"[05.12.26 10:01] Bob: cat a.gz b.gz\nno end") + b"\0\0")
    assert b"".join(read_blocks(path, block_bytes)) == first + b"[05.12.26 10:01] Bob: cat a.gz b.gz\nno end\n"
    assert all(block.endswith(b"\n") for block in read_blocks(path, block_bytes))
