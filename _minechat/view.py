"""What the terminal shows of the chat, without any I/O: lines hidden by nickname, lines marked by a word."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from enum import Enum

# The chat's "<nickname>: <text>"; a nickname may hold spaces, so the first separator ends it.
NICK_SEPARATOR = ": "
# How a terminal marks a line: given its text (or a piece of a long one) and whether to ring the bell too.
Mark = Callable[[str, bool], str]
# How a list is written in one variable: IGNORE=Eva,Vlad.
LIST_SEPARATOR = ","


class Verdict(Enum):
    """What the view does with one chat line."""

    SHOW = "show"
    HIDE = "hide"
    MARK = "mark"


def split_nick(line: str) -> tuple[str | None, str]:
    """Return a chat line's nickname (None for a line without one) and its text."""
    nick, separator, text = line.partition(NICK_SEPARATOR)
    return (nick, text) if separator else (None, line)


def split_list(value: str) -> list[str]:
    """Return the items of a comma-separated list, stripped, without empty ones."""
    return [item for item in (part.strip() for part in value.split(LIST_SEPARATOR)) if item]


def word_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    """Return a pattern that finds any of the words, whole and in any case, or None for no words."""
    alternatives = sorted({word for word in words if word}, key=len, reverse=True)
    if not alternatives:
        return None
    # Not \b: a word that begins or ends with a non-word character (@eve, C++) must match too.
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alternatives)) + r")(?!\w)", re.IGNORECASE)


class ViewRules:
    """Which chat lines to hide (by exact nickname) and which to mark (a word in their text)."""

    def __init__(self, ignore: Collection[str] = (), highlight: Iterable[str] = ()) -> None:
        self.ignore = frozenset(ignore)
        self._heads = tuple(nick + NICK_SEPARATOR for nick in self.ignore)
        self._words = word_pattern(highlight)

    def __bool__(self) -> bool:
        return bool(self.ignore) or self._words is not None

    def judge(self, line: str) -> Verdict:
        """Tell what to do with one chat line (without its time stamp)."""
        nick, text = split_nick(line)
        if nick in self.ignore:
            return Verdict.HIDE
        return Verdict.MARK if self.marks(text) else Verdict.SHOW

    def marks(self, text: str) -> bool:
        """Tell whether text (a chat line's, without its nickname) holds a word to mark."""
        return self._words is not None and self._words.search(text) is not None

    def may_act(self, text: str) -> bool:
        """Tell whether any line of text (lines without stamps) may be hidden or marked: a quick look first."""
        if self._words is not None and self._words.search(text):
            return True
        return any(text.startswith(head) or "\n" + head in text for head in self._heads)

    def show(self, line: str, mark: Mark) -> str | None:
        """Return a whole chat line (without its stamp) as the view shows it, marked without a bell; None: left out."""
        verdict = self.judge(line)
        if verdict is Verdict.HIDE:
            return None
        return mark(line, False) if verdict is Verdict.MARK else line
