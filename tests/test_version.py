"""--version: both clients say the package's version, from one source."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, run_client_sync

import _minechat


@pytest.mark.parametrize("script", ["read_client.py", "send_client.py"])
def test_version_is_the_packages(script: str, tmp_path: Path) -> None:
    done = run_client_sync(script, "--version", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"{script} {_minechat.__version__}\n"


def test_the_package_version_comes_from_the_same_source() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "_minechat.__version__"}
    assert _minechat.__version__.count(".") == 2
