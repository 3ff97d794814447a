"""The JSON Lines history format, all of it: writing records, a long line streamed, a cut record mended, read back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from _minechat.stamping import NICK_SEPARATOR, LineStamper, Moment, escape_note
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


def format_json_record(when: str, text: str, nick: str | None = None, **fields: object) -> str:
    """Return one JSON Lines record: time, nick, text and any further fields, on one line."""
    record = {"time": when, "nick": nick, "text": text, **fields}
    return make_json_safe(json.dumps(record, ensure_ascii=False)) + "\n"


def _json_record(head: str, line: str) -> str:
    """Return the record of one whole chat line; head holds its time."""
    nick, separator, text = line.partition(NICK_SEPARATOR)
    if separator:
        return f'{head}{_encode_json_string(nick)}, "text": {_encode_json_string(text)}}}\n'
    return f'{head}null, "text": {_encode_json_string(line)}}}\n'


def _json_head(time: str) -> str:
    return f'{{"time": "{time}", "nick": '


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
        head = _json_head(stamp)
        records.extend([_json_record(head, line) for line in lines])
        return make_json_safe("".join(records))

    def _format_piece(self, raw: bytes, stamp: str) -> str:
        text = raw.decode(ENCODING, errors="replace")
        if self._continued:
            return make_json_safe(_encode_json_string(text)[1:-1])
        return make_json_safe(_json_record(_json_head(stamp), text)[: -len(RECORD_END)])

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
        ending = complete_utf8(tail)  # a character cut in two gets whole (if not the one it was)
        suffix = complete_json_line((tail + ending).decode(ENCODING, errors="replace"))
        if suffix is None:
            return NEWLINE  # not a record we can end (a NUL-filled tail): at least nothing is glued to it
        return ending + suffix.encode(ENCODING) + NEWLINE

    def continued(self, moment: Moment) -> str:
        """Return what opens a record for the rest of a cut line in the new file."""
        return f'{{"time": "{moment.iso}", "nick": null, "continued": true, "text": "'


_LITERALS = ("true", "false", "null")
_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")


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


def complete_json_line(prefix: str) -> str | None:
    """Return what makes a JSON object cut anywhere into one valid JSON object on its line, or None if nothing can."""
    stack: list[str] = []
    in_string = is_key = False
    escape = 0  # 1 after a backslash; 2..5 within \\u's four hex digits
    expect = "value"  # what comes next outside a string: key, colon, value, after (a comma or a close)
    token = ""  # a literal or number being read
    for char in prefix:
        if in_string:
            if escape == 1:
                if char not in _ESCAPES:
                    return None
                escape = 2 if char == "u" else 0
            elif escape:
                if char not in _HEX:
                    return None
                escape = 0 if escape == 5 else escape + 1
            elif char == "\\":
                escape = 1
            elif char == '"':
                in_string = False
                expect = "colon" if is_key else "after"
            elif char < " ":
                return None
            continue
        if token and not (char.isalnum() or char in "+-."):
            token, expect = "", "after"
        if char in " \t":
            continue
        if char == '"' and expect in ("key", "value"):
            in_string, is_key = True, expect == "key"
        elif char in "{[" and expect == "value":
            stack.append("}" if char == "{" else "]")
            expect = "key" if char == "{" else "value"
        elif char in "}]" and stack and stack[-1] == char and expect in ("after", "key", "value"):
            stack.pop()
            expect = "after"
        elif char == ":" and expect == "colon":
            expect = "value"
        elif char == "," and expect == "after" and stack:
            expect = "key" if stack[-1] == "}" else "value"
        elif expect in ("value", "after") and (char.isalnum() or char in "+-."):
            token += char
        else:
            return None
    if not prefix.lstrip().startswith("{"):
        return None
    suffix = ""
    if in_string:
        suffix += "n" if escape == 1 else "0" * (6 - escape) if escape else ""
        suffix += '"'
        expect = "colon" if is_key else "after"
    if token:
        literal = next((word for word in _LITERALS if word.startswith(token)), None)
        suffix += literal[len(token) :] if literal else ("0" if token[-1] in "+-.eE" else "")
        expect = "after"
    suffix += {"colon": ": null", "value": "null", "key": '"cut": true' if prefix.rstrip().endswith(",") else ""}.get(
        expect, ""
    )
    suffix += "".join(reversed(stack))
    try:
        json.loads(prefix + suffix)
    except ValueError:
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


# The head of a record as format_json_record writes it: enough to show a record too long to parse.
_RECORD_HEAD = re.compile(r'\{"time": "([^"\\]*)", "nick": (null|"(?:[^"\\]|\\.)*"), "text": "((?:[^"\\]|\\.)*)')
_PARTIAL_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{0,3}$|\\$")


def parse_record_head(line: str) -> dict[str, object] | None:
    """Return time, nick and the text so far of a record cut before its end, or None if it is not one."""
    match = _RECORD_HEAD.match(line)
    if match is None:
        return None
    time_text, nick_json, text_json = match.groups()
    try:
        nick = json.loads(nick_json)
        text = json.loads('"' + _PARTIAL_ESCAPE.sub("", text_json) + '"')
    except ValueError:
        return None
    return {"time": time_text, "nick": nick, "text": text}
