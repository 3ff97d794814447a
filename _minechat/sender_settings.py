"""The sender's settings, parsed once; apart from settings.py, so that no --help builds them (about 1 ms)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from _minechat.settings import STDIN_MARK

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class SenderSettings:
    """Everything send_client needs, parsed once."""

    host: str
    port: int
    read_port: int
    token: str | None
    token_source: str
    nickname: str | None
    token_path: Path
    messages: tuple[str, ...]
    connect_timeout: float
    reply_timeout: float
    verbose: bool
    check: bool = False
    quiet: bool = False  # stderr: warnings and errors only

    @property
    def streaming(self) -> bool:
        """Tell whether stdin is relayed, which makes the sender never give up on the network."""
        return STDIN_MARK in self.messages
