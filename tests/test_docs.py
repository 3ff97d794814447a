"""README, .env.example and --help describe the same options."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT

import read_client
import send_client

PARSERS = [read_client.build_parser, send_client.build_parser]


def variables(build: object) -> set[str]:
    parser = build()  # type: ignore[operator]
    return {action.env_var for action in parser._actions if getattr(action, "env_var", None)}


@pytest.mark.parametrize("build", PARSERS)
def test_every_variable_is_documented(build: object) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in variables(build):
        assert f"`{name}`" in readme
        assert f"{name}=" in example


@pytest.mark.parametrize("build", PARSERS)
def test_every_option_is_in_the_readme(build: object) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parser = build()  # type: ignore[operator]
    for action in parser._actions:
        if action.option_strings and "--help" not in action.option_strings:
            assert any(f"`{option}`" in readme for option in action.option_strings), action.option_strings


def test_env_example_as_is_gives_the_defaults(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    bare = tmp_path / "bare"
    bare.mkdir()
    # Files are looked up in the current directory, so their paths differ by it alone.
    reader, bare_reader = (read_client.parse_settings([], {}, cwd) for cwd in (tmp_path, bare))
    assert reader.log_path.relative_to(tmp_path) == bare_reader.log_path.relative_to(bare)
    assert reader == replace(bare_reader, log_path=reader.log_path)
    argv = ["--nickname", "Eve"]
    sender, bare_sender = (send_client.parse_settings(argv, {}, cwd) for cwd in (tmp_path, bare))
    assert sender.token_path.relative_to(tmp_path) == bare_sender.token_path.relative_to(bare)
    assert sender == replace(bare_sender, token_path=sender.token_path, token_source=sender.token_source)
