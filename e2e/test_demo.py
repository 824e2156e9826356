"""`ambientctl sandbox demo` end to end: every proof passes on a fresh sandbox, exit status 0,
and nothing of the demo's sandbox is left behind."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from ambientctl.sandbox.kernel import list_netns
from e2e.conftest import NEEDS_ROOT

pytestmark = [pytest.mark.netns, pytest.mark.slow, NEEDS_ROOT]


def test_demo_proves_everything_and_cleans_up(tmp_path: Path):
    """The CLI demo prints one [PASS] per proof (the waypoint one [SKIP] only without the
    waypoint program), a summary with 0 failed, exits 0 and removes its sandbox."""
    name = f"demo{secrets.token_hex(2)}"
    env = {**os.environ, "AMBIENT_SANDBOX_STATE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "ambientctl", "sandbox", "--name", name, "demo"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    results = [line.split("]")[0] + "]" for line in out.stdout.splitlines()
               if line.startswith(("[PASS]", "[FAIL]", "[SKIP]"))]
    assert len(results) == 6 and "[FAIL]" not in results, out.stdout
    assert results.count("[PASS]") >= 5
    assert " 0 failed" in out.stdout.splitlines()[-1]
    assert [n for n in list_netns() if n.startswith(f"amb-{name}-")] == []
    assert not (tmp_path / name).exists()
