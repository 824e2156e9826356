"""The package's public surface: every exported name exists and the core imports no I/O."""

from __future__ import annotations

import ast
import pathlib

import meshcore.hbone

PACKAGE = pathlib.Path(meshcore.hbone.__file__).parent


def test_all_names_resolve() -> None:
    """Every name in meshcore.hbone.__all__ is importable from the package."""
    for name in meshcore.hbone.__all__:
        assert getattr(meshcore.hbone, name) is not None


def test_core_is_sans_io() -> None:
    """No module of the core imports trio, socket, ssl, asyncio or select."""
    forbidden = {"trio", "socket", "ssl", "asyncio", "select", "selectors"}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & forbidden, f"{path.name} imports {names & forbidden}"
