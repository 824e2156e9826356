"""Polling the manifest folder for the node agent (trio): model snapshots for the reconciler.

`watch_folder(root, reconciler)` calls `meshcore.model.folder.scan_folder` every `interval`
seconds (~200 ms) in a worker thread (it stats and reads files), numbers each scan
(`reconciler.scan_starting()`), and hands the resulting `ClusterModel` to
`reconciler.model_scanned(model, seq)` — the same object when nothing changed, so the reconciler
only re-plans on real changes. Folder diagnostics (YAML errors, invalid objects) are logged once
when they appear. `task_status.started()` fires after the first scan, so callers can run the
first reconcile pass on a complete model.

Who calls it: `cni_plugin.agent.app.run_agent`. The same scanner serves istiod_lite's folder
source (asyncio wrapper there), so both read the folder identically.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import trio

from meshcore.model import ClusterModel
from meshcore.model.diagnostics import Diagnostic
from meshcore.model.folder import FolderState, scan_folder

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2


class ModelSink(Protocol):
    def scan_starting(self) -> int: ...
    def model_scanned(self, model: ClusterModel, seq: int) -> None: ...


def _scan(root: str | os.PathLike[str], previous: FolderState | None,
          system_namespace: str) -> FolderState:
    return scan_folder(root, previous, system_namespace=system_namespace)


async def watch_folder(root: str | os.PathLike[str], sink: ModelSink, *,
                       interval: float = POLL_INTERVAL, system_namespace: str = "istio-system",
                       task_status: trio.TaskStatus[ClusterModel] = trio.TASK_STATUS_IGNORED,
                       ) -> None:
    """Poll `root` forever; the first scan's model is passed to `task_status.started`."""
    state: FolderState | None = None
    seen: set[Diagnostic] = set()
    started = False
    while True:
        seq = sink.scan_starting()
        state = await trio.to_thread.run_sync(_scan, root, state, system_namespace)
        current = set(state.diagnostics)
        for diag in sorted(current - seen, key=str):
            log.warning("manifest folder %s: %s", root, diag)
        seen = current
        sink.model_scanned(state.model, seq)
        if not started:
            started = True
            task_status.started(state.model)
        await trio.sleep(interval)
