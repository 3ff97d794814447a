"""pyproject.toml installs the three modules, the private package and two commands (dependencies: requirements.txt)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from helpers import ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

MODULES = {"chat_io", "read_client", "send_client"}
PACKAGE = "_minechat"
COMMANDS = {"minechat-read": "read_client:program", "minechat-send": "send_client:program"}
# What setuptools reads from a requirements file: one requirement per line, no pip options.
PLAIN_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\s*[<>=!~][^;#\s]*(\s*,\s*[<>=!~][^;#\s]*)*")


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def test_dependencies_are_requirements_txt(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    assert "dependencies" not in project
    assert "dependencies" in project["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    names = {re.split(r"[<>=!~]", requirement)[0].strip().lower() for requirement in requirements}
    assert names == {"aiofiles", "configargparse", "python-dotenv"}
    for requirement in requirements:
        assert PLAIN_REQUIREMENT.fullmatch(requirement), f"setuptools cannot read {requirement!r} as a dependency"


def test_only_the_three_modules_and_the_package_are_installed(pyproject: dict[str, Any]) -> None:
    setuptools = pyproject["tool"]["setuptools"]
    assert set(setuptools["py-modules"]) == MODULES
    assert setuptools["packages"] == [PACKAGE]
    # A package with sub-packages would need them listed: the layout has one flat private package.
    assert not [path for path in (ROOT / PACKAGE).iterdir() if path.is_dir() and path.name != "__pycache__"]
    # A new top-level module would be left out of the package: the guide allows none.
    assert {path.stem for path in ROOT.glob("*.py")} == MODULES


def test_commands_run_each_scripts_main(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["scripts"] == COMMANDS
    for target in COMMANDS.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_metadata_is_complete(pyproject: dict[str, Any]) -> None:
    project = pyproject["project"]
    assert project["requires-python"] == ">=3.10"
    for field in ("name", "description", "readme", "license"):
        assert project[field]
    assert "version" in project["dynamic"]  # from _minechat.__version__ (tests/test_version.py)
    assert (ROOT / project["readme"]).is_file()
    for path in project["license-files"]:
        assert (ROOT / path).is_file()


def test_readme_shows_how_to_install_the_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install ." in readme
    assert "pipx install ." in readme
    for command in COMMANDS:
        assert f"{command} --help" in readme
