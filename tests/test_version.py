"""--version on both clients, from the one version the package has."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import ROOT, client_env

import _minechat

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

DISTRIBUTION = "minechat-clients"
VERSION_SHAPE = re.compile(r"\d+\.\d+\.\d+")


@pytest.mark.parametrize("script", ["read_client.py", "send_client.py"])
def test_both_clients_print_the_package_version(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--version"],
        env=client_env(),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{script} {_minechat.__version__}\n"
    assert done.stderr == b""


def test_the_version_has_one_source() -> None:
    assert VERSION_SHAPE.fullmatch(_minechat.__version__)
    with (ROOT / "pyproject.toml").open("rb") as file:
        pyproject = tomllib.load(file)
    assert "version" not in pyproject["project"]  # not written twice
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "_minechat.__version__"}


def test_an_installed_package_has_the_same_version() -> None:
    try:
        installed = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.skip("the package is not installed here (a checkout)")
    assert installed == _minechat.__version__
