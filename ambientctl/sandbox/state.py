"""Where a sandbox keeps its files, and the journal of everything it created.

Who calls it: `ambientctl.sandbox.core` (records each namespace, process, file as it creates
it; reads it back for status/down) and `procs` (pid files, logs).

Layout of the state dir (default `/run/ambient-sandbox/<name>/`, override with
`$AMBIENT_SANDBOX_STATE`):

    state.json          the journal: settings, topology, created namespaces/files (rewritten
                        atomically after each step, so a crash leaves an accurate record)
    manifests/          the manifest folder when `up` was not given `-f DIR` (a copy of the
                        bundled examples)
    logs/<component>.log, pids/<component>.pid
    ca/, root-cert.pem, tokens.yaml, tokens/<node>.token, nodes/<node>/ (sockets, CNI log)

Invariants: the journal only grows while `up` runs; `down` removes the whole directory last,
so an interrupted `down` can be re-run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_ROOT = "/run/ambient-sandbox"


def state_root() -> Path:
    return Path(os.environ.get("AMBIENT_SANDBOX_STATE", DEFAULT_ROOT))


class StateDir:
    """Paths of one sandbox's state dir plus its journal (`record` keys persist atomically)."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.path = (root or state_root()) / name
        self.journal: dict[str, Any] = {}

    # -- paths
    @property
    def journal_file(self) -> Path:
        return self.path / "state.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def pids(self) -> Path:
        return self.path / "pids"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.pids / f"{component}.pid"

    def node_dir(self, node: str) -> Path:
        return self.path / "nodes" / node

    # -- journal
    def exists(self) -> bool:
        return self.journal_file.exists()

    def create(self) -> None:
        for d in (self.path, self.logs, self.pids):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    def load(self) -> dict[str, Any]:
        try:
            self.journal = json.loads(self.journal_file.read_text())
        except FileNotFoundError:
            self.journal = {}
        except json.JSONDecodeError:
            self.journal = {}  # a torn write: `down` still cleans by prefix
        return self.journal

    def save(self) -> None:
        tmp = self.journal_file.with_name(".state.json.tmp")
        tmp.write_text(json.dumps(self.journal, indent=2, sort_keys=True))
        os.replace(tmp, self.journal_file)

    def record(self, key: str, value: Any) -> None:
        self.journal[key] = value
        self.save()

    def append(self, key: str, value: Any) -> None:
        items = self.journal.setdefault(key, [])
        if value not in items:
            items.append(value)
        self.save()
