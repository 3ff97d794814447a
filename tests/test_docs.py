"""README, .env.example and --help describe the same options."""

from __future__ import annotations

import shutil
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
    assert read_client.parse_settings([], {}, tmp_path) == read_client.parse_settings([], {}, bare)
    argv = ["--nickname", "Eve"]
    assert send_client.parse_settings(argv, {}, tmp_path) == send_client.parse_settings(argv, {}, bare)


def test_readme_and_help_state_the_nickname_choice() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    text = " ".join(send_client.build_parser().format_help().split())
    assert "refused when a token is found" in readme
    assert "refused when a token is found" in text
    assert "`--nickname` when a token is found" in readme
