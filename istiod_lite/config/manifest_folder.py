"""The manifest-folder config source for istiod_lite: the folder core, polled from asyncio.

`ManifestFolderSource(dir).watch()` yields `ConfigSnapshot`s: the current one, then one per
change. Scanning (`meshcore.model.folder.scan_folder`: list, stat, re-read changed files,
re-parse, update the model incrementally, per-object last-good rules) runs in a worker thread
every `interval` seconds. New and resolved diagnostics are logged on `istiod_lite.config`.
Layout, overlay and validation rules: docs/control-plane-model.md.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from istiod_lite.config.source import ConfigSnapshot, log_new
from meshcore.model.folder import FolderState, scan_folder

__all__ = ["FolderState", "ManifestFolderSource", "scan_folder"]


class ManifestFolderSource:
    """Watches one folder; the only writer of its FolderState (call `scan` from one task)."""

    def __init__(self, root: str | os.PathLike[str], *, interval: float = 0.2,
                 system_namespace: str = "istio-system") -> None:
        self.root = os.fspath(root)
        self.interval = interval
        self.system_namespace = system_namespace
        self._state: FolderState | None = None

    @property
    def state(self) -> FolderState:
        if self._state is None:
            self.scan()
        assert self._state is not None
        return self._state

    @property
    def snapshot(self) -> ConfigSnapshot:
        return ConfigSnapshot(self.state.model, self.state.diagnostics)

    def scan(self) -> bool:
        """Poll once (blocking file I/O); True if the model or diagnostics changed."""
        old = self._state
        new = scan_folder(self.root, old, system_namespace=self.system_namespace)
        self._state = new
        if new is old:
            return False
        log_new(old.diagnostics if old else (), new.diagnostics)
        return True

    async def watch(self) -> AsyncIterator[ConfigSnapshot]:
        """The current snapshot, then one per change; polls every `interval` seconds."""
        if self._state is None:
            await asyncio.to_thread(self.scan)
        yield self.snapshot
        while True:
            await asyncio.sleep(self.interval)
            if await asyncio.to_thread(self.scan):
                yield self.snapshot
