"""The layout's rules that code can check: chat_io imports nothing of ours and exports what the others import."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

import chat_io

OURS = {"chat_io", "read_client", "send_client", "_minechat"}


def product_modules() -> list[Path]:
    """Every module of the product but chat_io: the two scripts and the private package."""
    return [ROOT / "read_client.py", ROOT / "send_client.py", *sorted((ROOT / "_minechat").glob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    """Return the top-level names of the modules a file imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {module.split(".")[0] for module in modules}


def test_chat_io_exports_exactly_what_the_other_modules_import() -> None:
    imported = {
        alias.name
        for path in product_modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module == "chat_io"
        for alias in node.names
    }
    assert sorted(chat_io.__all__) == sorted(imported)


def test_dependencies_run_one_way() -> None:
    assert imported_modules(ROOT / "chat_io.py") & OURS == set()
    for path in sorted((ROOT / "_minechat").glob("*.py")):
        assert imported_modules(path) & {"read_client", "send_client"} == set(), path.name


def test_no_wait_with_a_timeout_can_lose_a_cancel() -> None:
    # asyncio.wait_for before Python 3.12 loses a cancel that lands as its work completes: chat_io.within.
    uses = [
        f"{path.name}:{node.lineno}"
        for path in [ROOT / "chat_io.py", *product_modules()]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "wait_for" and ast.unparse(node.value) == "asyncio"
    ]
    assert uses == []
