"""The layering rules in pyproject's [tool.importlinter] hold (product packages independent,
sans-IO cores free of I/O imports, trio and asyncio kept apart)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    """lint-imports reports every contract KEPT."""
    lint_imports = pathlib.Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
