"""The sandbox's process supervisor: start a program inside a netns, detached, with a log file
and a pid file; check it; stop it.

Who calls it: `ambientctl.sandbox.core`. Processes outlive the `ambientctl sandbox up` command
(they run in their own session, like DaemonSet pods), so the only link to them is the pid file
`pids/<component>.pid` holding `<pid> <start time>`; the start time (field 22 of
/proc/<pid>/stat) guards against pid reuse: a pid whose start time differs is not ours.

Invariants: a component has at most one pid file; `stop` is idempotent and never signals a
process that is not the one we started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ambientctl.sandbox.kernel import in_netns
from ambientctl.sandbox.state import StateDir


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces; fields after the closing paren are space separated
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def start(state: StateDir, component: str, argv: Sequence[str], *, netns: str | None,
          env: Mapping[str, str] | None = None) -> int:
    """Start `argv` inside `netns` (None: ours), detached; stdout+stderr to its log file."""
    log = open(state.log_file(component), "ab")  # noqa: SIM115 - handed to the child
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        ctx = in_netns(netns) if netns else contextlib.nullcontext()
        with ctx:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=full_env,
                                    start_new_session=True, close_fds=True)
    finally:
        log.close()
    state.pid_file(component).write_text(f"{proc.pid} {_start_time(proc.pid) or ''}\n")
    # The Popen object is dropped: the child is reaped by init once we exit. While we live,
    # `alive()` reaps it if it died, so a dead child never shows up as a zombie "alive".
    _children[proc.pid] = proc
    return proc.pid


_children: dict[int, subprocess.Popen[bytes]] = {}


def read_pid(state: StateDir, component: str) -> tuple[int, str] | None:
    try:
        pid, _, started = state.pid_file(component).read_text().strip().partition(" ")
        return int(pid), started
    except (OSError, ValueError):
        return None


def alive(state: StateDir, component: str) -> int | None:
    """The component's pid if that process (same start time) is still running."""
    rec = read_pid(state, component)
    if rec is None:
        return None
    pid, started = rec
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return None
    now = _start_time(pid)
    return pid if now is not None and (not started or now == started) else None


def exit_code(component_pid: int) -> int | None:
    child = _children.get(component_pid)
    return child.poll() if child is not None else None


def components(state: StateDir) -> list[str]:
    if not state.pids.exists():
        return []
    return sorted(p.stem for p in state.pids.glob("*.pid"))


def stop(state: StateDir, component: str, *, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; remove the pid file. True if it ran."""
    pid = alive(state, component)
    ran = pid is not None
    if pid is not None:
        terminate([pid], grace=grace)
    with contextlib.suppress(FileNotFoundError):
        state.pid_file(component).unlink()
    return ran


def terminate(pids: Sequence[int], *, grace: float = 5.0) -> None:
    """SIGTERM each pid, wait up to `grace` seconds, SIGKILL the rest."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if _running(p)]
        if pending:
            time.sleep(0.05)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        child = _children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=2)


def _running(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    return _start_time(pid) is not None


def tail(path: Path, lines: int = 15) -> str:
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
