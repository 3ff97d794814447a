"""The JSON Lines history format, all of it: writing records, a long line streamed, a cut record mended, read back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from _minechat.stamping import LineStamper, Moment, escape_note
from _minechat.view import NICK_SEPARATOR
from chat_io import ENCODING, NEWLINE

# JSON escapes what is below U+0020; these (DEL, C1, bidi controls and marks, line and paragraph
# separators) it leaves raw, and they too could drive a terminal that shows the file or split its lines.
_UNSAFE_IN_JSON = "[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"  # compiled on first use
_encode_json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]
RECORD_END = '"}\n'


def _escape_json_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def make_json_safe(text: str) -> str:
    """Turn the characters JSON leaves raw but a terminal or a line splitter would act on into \\u escapes."""
    return re.sub(_UNSAFE_IN_JSON, _escape_json_char, text) if re.search(_UNSAFE_IN_JSON, text) else text


def record_head(when: str, nick: str | None = None, **fields: object) -> str:
    """Return the start of a record up to its text's opening quote: every record is begun here."""
    nick_json = "null" if nick is None else _encode_json_string(nick)
    extra = json.dumps(fields, ensure_ascii=False)[1:-1] + ", " if fields else ""
    return f'{{"time": {_encode_json_string(when)}, "nick": {nick_json}, {extra}"text": '


def format_json_record(when: str, text: str, nick: str | None = None, **fields: object) -> str:
    """Return one JSON Lines record: time, nick, text and any further fields, on one line."""
    rest = ", " + json.dumps(fields, ensure_ascii=False)[1:] if fields else "}"
    return make_json_safe(record_head(when, nick) + _encode_json_string(text) + rest) + "\n"


def split_head(when: str) -> tuple[str, str]:
    """Return the head of a record at when in two parts, before and after its nick: a flood fills in many nicks."""
    before, _, after = record_head(when).partition(_NO_NICK)
    return before, after


_NO_NICK = "null"  # the nick of a head without one; the time before it is ISO 8601, which never holds it


def _json_record(head: tuple[str, str], line: str) -> str:
    """Return the record of one whole chat line, its nick split off at the first separator; head from split_head."""
    nick, separator, text = line.partition(NICK_SEPARATOR)
    if separator:
        return f"{head[0]}{_encode_json_string(nick)}{head[1]}{_encode_json_string(text)}}}\n"
    return f"{head[0]}{_NO_NICK}{head[1]}{_encode_json_string(line)}}}\n"


class JsonLineStamper(LineStamper):
    """Turn received bytes into JSON Lines: {"time", "nick", "text"}, one record per line, however long.

    The stamp given to feed and flush is the record's time (ISO 8601). A line longer than max_piece is
    streamed: its record is opened with the first piece (whose first ": " splits off the nick), its text
    continued piece by piece, and closed at the newline; memory stays bounded and the record stays whole.
    """

    def _format_block(self, block: bytes, stamp: str) -> str:
        lines = block.decode(ENCODING, errors="replace").replace("\r\n", "\n")[:-1].split("\n")
        records = []
        if self._continued:
            records.append(_encode_json_string(lines[0])[1:] + "}\n")
            del lines[0]
        head = split_head(stamp)
        records.extend([_json_record(head, line) for line in lines])
        return make_json_safe("".join(records))

    def _format_piece(self, raw: bytes, stamp: str) -> str:
        text = raw.decode(ENCODING, errors="replace")
        if self._continued:
            return make_json_safe(_encode_json_string(text)[1:-1])
        return make_json_safe(_json_record(split_head(stamp), text)[: -len(RECORD_END)])

    def _format_end(self, raw: bytes, stamp: str) -> str:
        return self._format_piece(raw, stamp) + RECORD_END


class JsonHistory:
    """History as JSON Lines: {"time", "nick", "text"} per chat line; notes add "event" and its details."""

    separate_display = True  # stdout stays text

    def make_stamper(self) -> LineStamper:
        return JsonLineStamper()

    def stamp(self, moment: Moment) -> str:
        return moment.iso

    def note(self, moment: Moment, text: str, event: str, details: Mapping[str, object]) -> str:
        return format_json_record(moment.iso, escape_note(text), event=event, **details)

    # A record's text is streamed in whole escapes, so closing its string and object anywhere is valid JSON.
    cut_end = RECORD_END

    def end_cut_line(self, tail: bytes) -> bytes:
        """Return what makes a record an earlier run left unfinished valid JSON, then ends its line."""
        return end_cut_record(tail)

    def continued(self, moment: Moment) -> str:
        """Return what opens a record for the rest of a cut line in the new file."""
        return record_head(moment.iso, continued=True) + '"'


def complete_utf8(data: bytes) -> bytes:
    """Return the continuation bytes that end a UTF-8 character cut at the end of data (b"" if none is cut)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            needed = 3 if byte >= 0xF0 else 2 if byte >= 0xE0 else 1  # continuation bytes it wants
            missing = needed - (back - 1)
            if byte < 0xC0 or missing <= 0:
                return b""
            # A second byte that every lead byte accepts (E0 wants A0.., F0 90..), then plain ones.
            second = {0xE0: 0xA0, 0xF0: 0x90}.get(byte, 0x80) if back == 1 else 0x80
            return bytes([second] + [0x80] * (missing - 1))
    return b""


def end_cut_record(tail: bytes) -> bytes:
    """Return what makes a record cut at the end of tail valid JSON, then ends its line."""
    ending = complete_utf8(tail)  # a character cut in two gets whole (if not the one it was)
    suffix = mend_suffix((tail + ending).decode(ENCODING, errors="replace"))
    if suffix is None:
        return NEWLINE  # not a record we can end (a NUL-filled tail): at least nothing is glued to it
    return ending + suffix.encode(ENCODING) + NEWLINE


_LITERALS = ("true", "false", "null")
# A string's characters up to its end or its cut: plain runs and whole escapes.
_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_ESCAPE_CUT = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?\Z")
_TOKEN = re.compile(r"(?:[^\W_]|[+\-.])+")  # a number or a literal, checked by the parser at the end
_SPACE = re.compile(r"[ \t]*")


@dataclass
class JsonCut:
    """Where a JSON text was cut: what is open, and what the next token would have been."""

    closers: list[str] = field(default_factory=list)  # of the arrays and objects open, innermost last
    expect: str = "value"  # outside a string: key, colon, value, or after (a comma or a close)
    string: str = ""  # cut inside a string: "key" or "value"
    escape: str = ""  # an escape cut short at the very end, as written
    token: str = ""  # a number or literal cut at the very end


def scan_json_cut(text: str) -> JsonCut | None:
    """Follow a JSON text cut anywhere; return where it stops, or None if it is not the start of valid JSON."""
    cut = JsonCut()
    position = 0
    while True:
        position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
        if position == len(text):
            return cut
        if text[position] == '"' and cut.expect in ("key", "value"):
            next_position = _read_string(cut, text, position + 1)
        elif cut.expect == "value" and (token := _TOKEN.match(text, position)):
            next_position = _read_token(cut, text, token)
        else:
            next_position = position + 1 if _read_punctuation(cut, text[position]) else None
        if next_position is None:
            return None
        position = next_position


def _read_string(cut: JsonCut, text: str, start: int) -> int | None:
    """Read a string's body from start; return where it ends, or None if it is invalid."""
    end = _STRING_BODY.match(text, start).end()  # type: ignore[union-attr]
    if end < len(text) and text[end] == '"':
        cut.expect = "colon" if cut.expect == "key" else "after"
        return end + 1
    if end == len(text) or _ESCAPE_CUT.match(text, end):
        cut.string, cut.escape = cut.expect, text[end:]
        return len(text)
    return None


def _read_token(cut: JsonCut, text: str, token: re.Match[str]) -> int:
    """Read a number or literal; one cut at the very end is kept to be completed."""
    if token.end() == len(text):
        cut.token = token.group()
    else:
        cut.expect = "after"
    return token.end()


def _read_punctuation(cut: JsonCut, char: str) -> bool:
    """Follow a bracket, colon or comma; tell whether it may stand here."""
    if char in "{[" and cut.expect == "value":
        cut.closers.append("}" if char == "{" else "]")
        cut.expect = "key" if char == "{" else "value"
    elif char in "}]" and cut.closers[-1:] == [char] and cut.expect != "colon":
        cut.closers.pop()
        cut.expect = "after"
    elif char == ":" and cut.expect == "colon":
        cut.expect = "value"
    elif char == "," and cut.expect == "after" and cut.closers:
        cut.expect = "key" if cut.closers[-1] == "}" else "value"
    else:
        return False
    return True


def closing_of(cut: JsonCut, prefix: str) -> str:
    """Return what closes the JSON text prefix, cut where cut says, into a whole one (checked by the caller)."""
    parts = []
    expect = cut.expect
    if cut.string:
        parts.append(_end_escape(cut.escape) + '"')
        expect = "colon" if cut.string == "key" else "after"
    if cut.token:
        literal = next((word for word in _LITERALS if word.startswith(cut.token)), None)
        parts.append(literal[len(cut.token) :] if literal else ("0" if cut.token[-1] in "+-.eE" else ""))
        expect = "after"
    if expect == "key" and prefix.rstrip().endswith(","):
        parts.append('"cut": true')
    else:
        parts.append({"colon": ": null", "value": "null"}.get(expect, ""))
    parts.extend(reversed(cut.closers))
    return "".join(parts)


def _end_escape(escape: str) -> str:
    """Return what makes an escape cut short whole: a lone backslash an \\n, a \\u its four digits."""
    if not escape:
        return ""
    return "n" if escape == "\\" else "0" * (6 - len(escape))


def mend_suffix(prefix: str) -> str | None:
    """Return what makes a JSON object cut anywhere into one valid JSON object on its line, or None if nothing can."""
    if not prefix.lstrip().startswith("{"):
        return None
    cut = scan_json_cut(prefix)
    if cut is None:
        return None
    suffix = closing_of(cut, prefix)
    try:
        json.loads(prefix + suffix)
    except (ValueError, RecursionError):
        return None
    return suffix


def parse_record(line: str) -> dict[str, object] | None:
    """Return a JSON Lines history record, or None if the line is not one."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # a damaged line, or one nested beyond the parser's depth
        return None
    if isinstance(record, dict) and isinstance(record.get("time"), str) and isinstance(record.get("text"), str):
        return record
    return None


def parse_cut_record(line: str) -> dict[str, object] | None:
    """Return a record cut before its end (its text so far), or None if the line does not start one."""
    cut = scan_json_cut(line) if line.startswith("{") else None
    if cut is None:
        return None
    if cut.escape:  # shown, half an escape would be a wrong character: leave it out
        line, cut.escape = line[: -len(cut.escape)], ""
    return parse_record(line + closing_of(cut, line))
