"""Thin wrappers over the docker, kind, kubectl and helm CLIs for the kind e2e suite.

Called by e2e/kind/conftest.py (cluster set-up) and the tests. Every call has a timeout and
raises `CommandFailed` with the command and its output; waits use `kubectl wait` or poll the
API with a deadline (the cluster is real: there is no event stream to subscribe to here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CLUSTER = "ambient-py-e2e"
IMAGE = "ambient-py/ambient-py"
GATEWAY_API_CRDS = ("https://github.com/kubernetes-sigs/gateway-api/releases/download/"
                    "v1.2.1/standard-install.yaml")


class CommandFailed(Exception):
    def __init__(self, args: Sequence[str], rc: int, out: str, err: str) -> None:
        super().__init__(f"{' '.join(args)} exited {rc}\nstdout: {out[-2000:]}\n"
                         f"stderr: {err[-2000:]}")
        self.rc, self.out, self.err = rc, out, err


def missing_tools() -> str | None:
    """Why the suite cannot run here (None when it can)."""
    absent = [t for t in ("docker", "kind", "kubectl") if shutil.which(t) is None]
    if absent:
        return f"missing: {', '.join(absent)}"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "docker daemon not reachable (`docker info` failed)"
    return None


def run(*args: str, timeout: float = 300, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          input=input, cwd=ROOT)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def kubectl(*args: str, timeout: float = 120, input: str | None = None,
            check: bool = True) -> str:
    return run("kubectl", "--context", f"kind-{CLUSTER}", *args, timeout=timeout,
               input=input, check=check)


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 180,
             interval: float = 2.0) -> Any:
    """Poll `check` until it returns something truthy (the real cluster has no test hooks)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except CommandFailed as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


def exec_in(namespace: str, target: str, *cmd: str, timeout: float = 30,
            check: bool = True) -> str:
    return kubectl("exec", "-n", namespace, target, "--", *cmd, timeout=timeout, check=check)


def http_get(url: str, *, timeout: float = 5) -> str:
    """A python one-liner run in the client pod: prints status and the response headers."""
    return ("import urllib.request as u\n"
            f"r = u.urlopen({url!r}, timeout={timeout})\n"
            "print(r.status); print(dict(r.headers))")


def mesh_condition(type_: str) -> dict[str, Any] | None:
    mesh = get_json("mesh", "default")
    conds = (mesh.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)
