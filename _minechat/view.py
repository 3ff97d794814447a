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


def is_word_character(char: str) -> bool:
    """Tell whether a character is one of a word, as \\w of a regular expression has it."""
    return char.isalnum() or char == "_"


class WordFinder:
    """Finds any of some words, whole and in any case: in text casefolded, where every case is one."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(sorted({word.casefold() for word in words if word}))

    def __bool__(self) -> bool:
        return bool(self.words)

    def find(self, folded: str, start: int = 0, end: int | None = None) -> list[int]:
        """Return where a word begins, whole, in casefolded text between start and end, in order.

        str.find, not a regular expression: a search for one of several words, or in any case, or
        after a lookbehind, costs the engine several times more than a plain search for each word.
        Not \\b either: a word that begins or ends with a non-word character (@eve, C++) is found too.
        """
        end = len(folded) if end is None else end
        found = []
        for word in self.words:
            begin = folded.find(word, start, end)
            while begin >= 0:
                after = begin + len(word)
                if (begin == 0 or not is_word_character(folded[begin - 1])) and (
                    after == len(folded) or not is_word_character(folded[after])
                ):
                    found.append(begin)
                begin = folded.find(word, begin + 1, end)
        return sorted(found) if len(self.words) > 1 else found

    def occurs(self, text: str) -> bool:
        """Tell whether any of the words is in text, whole and in any case."""
        return bool(self.find(text.casefold()))


class ViewRules:
    """Which chat lines to hide (by exact nickname) and which to mark (a word in their text).

    Lines are judged one at a time (judge), or a block of whole lines at once (drop_hidden, then
    marked_spans): a flood is filtered in a few passes over each block, not line by line in Python.
    """

    def __init__(self, ignore: Collection[str] = (), highlight: Iterable[str] = ()) -> None:
        self.ignore = frozenset(ignore)
        self._words = WordFinder(highlight)
        # A line begins with "NICK: " exactly when its nickname is NICK (a NICK holding ": " never matches).
        # Led by the line break before it (a literal the engine looks for fast) rather than by ^ in multiline mode.
        heads = sorted(re.escape(nick + NICK_SEPARATOR) for nick in self.ignore if NICK_SEPARATOR not in nick)
        self._hidden = re.compile("\n(?:" + "|".join(heads) + ")[^\n]*") if heads else None

    def __bool__(self) -> bool:
        return bool(self.ignore) or bool(self._words)

    def judge(self, line: str) -> Verdict:
        """Tell what to do with one chat line (without its time stamp)."""
        nick, text = split_nick(line)
        if nick in self.ignore:
            return Verdict.HIDE
        return Verdict.MARK if self.marks(text) else Verdict.SHOW

    def marks(self, text: str) -> bool:
        """Tell whether text (a chat line's, without its nickname) holds a word to mark."""
        return self._words.occurs(text)

    def drop_hidden(self, text: str) -> tuple[str, int]:
        """Return whole lines (each ending with a newline) without those of ignored nicknames, and how many went."""
        if self._hidden is None:
            return text, 0
        kept, count = self._hidden.subn("", "\n" + text)
        return kept[1:], count

    def marked_spans(self, text: str) -> list[tuple[int, int]]:
        """Return where the lines to mark are in whole lines of text: (start, end before the newline), in order."""
        if not self._words:
            return []
        folded = text.casefold()
        if len(folded) != len(text):  # a character folds to several (ß, ﬁ): positions differ, judge each line
            return self._marked_lines(text)
        spans: list[tuple[int, int]] = []
        for begin in self._words.find(folded):
            start = folded.rfind("\n", 0, begin) + 1
            if spans and spans[-1][0] == start:
                continue  # the line is marked already
            end = folded.find("\n", begin)
            separator = folded.find(NICK_SEPARATOR, start, end)
            text_start = start if separator < 0 else separator + len(NICK_SEPARATOR)
            if begin < text_start and not self._words.find(folded, text_start, end):
                continue  # the word is in the nickname only
            spans.append((start, end))
        return spans

    def _marked_lines(self, text: str) -> list[tuple[int, int]]:
        spans = []
        start = 0
        for line in text[:-1].split("\n"):
            if self.marks(split_nick(line)[1]):
                spans.append((start, start + len(line)))
            start += len(line) + 1
        return spans

    def show(self, line: str, mark: Mark) -> str | None:
        """Return a whole chat line (without its stamp) as the view shows it, marked without a bell; None: left out."""
        verdict = self.judge(line)
        if verdict is Verdict.HIDE:
            return None
        return mark(line, False) if verdict is Verdict.MARK else line
