"""The view's matching, from tables: nicknames split off chat lines, words found whole, lists split."""

from __future__ import annotations

import random

import pytest

from _minechat.stamping import LineStamper, ViewStamper
from _minechat.view import Verdict, ViewRules, split_list, split_nick

HIDE, MARK, SHOW = Verdict.HIDE, Verdict.MARK, Verdict.SHOW


@pytest.mark.parametrize(
    ("line", "nick", "text"),
    [
        ("Eva: hi", "Eva", "hi"),
        # A nickname may hold spaces: the first ": " ends it.
        ("Boring Eve: a: b", "Boring Eve", "a: b"),
        ("Server: # к чату присоединился Brave", "Server", "# к чату присоединился Brave"),
        # A line without the separator is chat without a nickname.
        ("just text", None, "just text"),
        ("Eva:hi", None, "Eva:hi"),
        (": no nick", "", "no nick"),
        ("", None, ""),
    ],
)
def test_split_nick(line: str, nick: str | None, text: str) -> None:
    assert split_nick(line) == (nick, text)


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("Eva", ["Eva"]),
        ("Eva,Vlad", ["Eva", "Vlad"]),
        (" Eva , Vlad ,", ["Eva", "Vlad"]),
        ("Boring Eve,Server", ["Boring Eve", "Server"]),
        (",,", []),
    ],
)
def test_split_list(value: str, items: list[str]) -> None:
    assert split_list(value) == items


IGNORE = ("Eva", "Vlad", "Server", "Boring Eve")
HIGHLIGHT = ("eve", "C++", "@loyd", "ПРИВЕТ")


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        # Exactly the nickname: hidden; another nickname that contains it is not.
        ("Eva: hi", HIDE),
        ("Vlad: hi", HIDE),
        ("Server: # к чату присоединился Brave", HIDE),
        ("Boring Eve: hi", HIDE),
        ("Evangeline: hi", SHOW),
        ("eva: hi", SHOW),
        ("Brave Eva: hi", SHOW),
        # A line that only quotes an ignored nickname is someone else's.
        ("Loyd: Eva: hi", SHOW),
        ("Eva", SHOW),
        # A word, whole and in any case, in the text.
        ("Loyd: hi eve", MARK),
        ("Loyd: Hi EVE!", MARK),
        ("Loyd: eve, are you there?", MARK),
        ("Loyd: привет всем", MARK),
        ("Loyd: I write C++ daily", MARK),
        ("Loyd: ping @loyd", MARK),
        # Not a whole word.
        ("Loyd: evening", SHOW),
        ("Loyd: steve", SHOW),
        ("Loyd: eve_1", SHOW),
        ("Loyd: приветствую", SHOW),
        ("Loyd: I write C+ daily", SHOW),
        ("Loyd: mail loyd", SHOW),
        # Only the text counts: a nickname holding the word does not mark its own lines.
        ("Focused Eve: hello", SHOW),
        ("Focused Eve: hello eve", MARK),
        # A line without a nickname is all text.
        ("eve was here", MARK),
        # Hidden wins over marked.
        ("Eva: eve", HIDE),
        # Casefolded: a character that folds to several (ß to ss) is compared as such, and shifts nothing.
        ("Loyd: Straße EVE", MARK),
        ("Loyd: ﬁne, eve", MARK),
        ("Loyd: Straße", SHOW),
        ("Eve: Straße", SHOW),
    ],
)
def test_judge(line: str, verdict: Verdict) -> None:
    rules = ViewRules(IGNORE, HIGHLIGHT)
    assert rules.judge(line) is verdict
    # Judged in a block of whole lines, the same.
    block = f"Loyd: x\n{line}\nLoyd: y\n"
    kept, hidden = rules.drop_hidden(block)
    assert (kept, hidden) == ((block, 0) if verdict is not HIDE else ("Loyd: x\nLoyd: y\n", 1))
    spans = [kept[start:end] for start, end in rules.marked_spans(kept)]
    assert spans == ([line] if verdict is MARK else [])


def test_no_rules_act_on_nothing() -> None:
    rules = ViewRules()
    assert not rules
    assert rules.judge("Eva: eve") is SHOW
    assert rules.drop_hidden("Eva: eve\n") == ("Eva: eve\n", 0)
    assert rules.marked_spans("Eva: eve\n") == []
    assert ViewRules(["Eva"]) and ViewRules(highlight=["eve"])
    assert not ViewRules(highlight=[""])


def mark(text: str, ring: bool) -> str:
    """Mark as a test sees it: <text>, and ! for the bell."""
    return f"<{text}>" + ("!" if ring else "")


def view_of(chunks: list[bytes], max_piece: int = 64, flush: bool = False) -> str:
    """Return what a view shows of chunks received, stamped S."""
    stamper = ViewStamper(ViewRules(IGNORE, HIGHLIGHT), mark, max_piece)
    shown = "".join(stamper.feed(chunk, "S") for chunk in chunks)
    return shown + (stamper.flush("S") if flush else "")


@pytest.mark.parametrize(
    ("chunks", "shown"),
    [
        ([b"Eva: a\nLoyd: hi eve\nVlad: b\nLoyd: plain\n"], "S <Loyd: hi eve>!\nS Loyd: plain\n"),
        ([b"Ev", b"a: hidden\nLo", b"yd: x\n"], "S Loyd: x\n"),
        ([b"Loyd: a\r\n", b"Server: # \x1b[2J\n"], "S Loyd: a\n"),
        # Control characters are escaped as in the history, marked or not.
        ([b"Loyd: eve \x07\n"], "S <Loyd: eve \\x07>!\n"),
        # A line longer than max_piece (16 here) comes in pieces: judged by its first, rung once.
        ([b"Eva: 0123456789abcdef0123456789\nLoyd: ok\n"], "S Loyd: ok\n"),
        ([b"Eva: 0123456789", b"abcdef0123456789", b"abcdef\nLoyd: ok\n"], "S Loyd: ok\n"),
        (
            [b"Loyd: eve 0123456789", b"abcdef eve 0123456789abcdef\n"],
            "S <Loyd: eve 012345>!<6789abcdef eve 0123456789abcdef>\n",
        ),
        # Marked where a piece holds the word, rung with the first.
        ([b"Loyd: 0123456789abcdef", b"0123 eve 456789abcdef\n"], "S Loyd: 0123456789<abcdef0123 eve 456789abcdef>!\n"),
    ],
)
def test_view_stamper(chunks: list[bytes], shown: str) -> None:
    assert view_of(chunks, max_piece=16) == shown


@pytest.mark.parametrize(
    ("chunks", "shown"),
    [
        ([b"Eva: unfinished"], ""),
        ([b"Loyd: unfinished eve"], "S Loyd: unfinished< eve>!\n"),
        ([b"Loyd: eve unfinished"], "S <Loyd: eve unfini>!shed\n"),
        ([b"Loyd: eve!"], "S <Loyd: eve!>!\n"),
        ([b"Loyd: unfinished"], "S Loyd: unfinished\n"),
        ([b"Eva: 0123456789abcdef0123"], ""),
        ([b"Loyd: 0123456789abcdef0123"], "S Loyd: 0123456789abcdef0123\n"),
    ],
)
def test_view_stamper_flushes_the_unfinished_line_by_the_same_rules(chunks: list[bytes], shown: str) -> None:
    assert view_of(chunks, max_piece=16, flush=True) == shown


def test_a_view_that_acts_on_nothing_shows_what_the_history_stamper_gives() -> None:
    rng = random.Random(22)
    lines = [b"Loyd: hi\n", "Боря: здравствуй\n".encode(), b"Ann: " + b"x" * 40 + b"\n", b"bare\r\n", b"\x1b]0;\n"]
    data = b"".join(rng.choice(lines) for _ in range(300))
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 30))
        chunks = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        plain, view = LineStamper(16), ViewStamper(ViewRules(IGNORE, HIGHLIGHT), mark, 16)
        expected = "".join(plain.feed(chunk, "S") for chunk in chunks) + plain.flush("S")
        assert "".join(view.feed(chunk, "S") for chunk in chunks) + view.flush("S") == expected


def test_a_view_shows_what_judging_each_line_gives() -> None:
    rng = random.Random(2022)
    lines = ["Eva: hi eve", "Loyd: hi eve", "Loyd: EVE!", "Focused Eve: hello", "Boring Eve: eve", "Ann: C++ rocks"]
    lines += ["eve bare", "Server: # к чату присоединился Brave", "Ann: @loyd: hi", "Ann: nothing", "Eva:eve"]
    rules = ViewRules(IGNORE, HIGHLIGHT)
    for _ in range(50):
        chat = [rng.choice(lines) for _ in range(rng.randint(1, 40))]
        data = "".join(line + "\n" for line in chat).encode()
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 8))))
        chunks = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        view = ViewStamper(rules, mark)
        expected = [rules.show(line, lambda text, ring: mark(text, True)) for line in chat]
        shown = "".join(view.feed(chunk, "S") for chunk in chunks)
        assert shown == "".join(f"S {line}\n" for line in expected if line is not None)
        assert view.hidden == expected.count(None)
