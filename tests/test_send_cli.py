"""send_client's command line: settings, usage errors, --help, the nickname prompt, stdin, signals, main()."""

from __future__ import annotations

import pytest

import _minechat.backlog
import _minechat.dialogue
import _minechat.history
import _minechat.output
import _minechat.settings
import _minechat.shutdown
import _minechat.systemd


def test_empty_message_error_says_so() -> None:
    with pytest.raises(ValueError, match=r"^an empty message cannot be posted$"):
        _minechat.dialogue.encode_post(" ")
