"""List-then-watch of one collection into an in-memory store (asyncio), over `KubeClient`.

Called by components that keep a live view of a few kinds without kopf: the CNI node agent
(namespaces, and pods with `spec.nodeName=<node>`; through `meshcore.grpc_bridge`).
`Informer.run()` lists, then watches from the list's resourceVersion; when the server ends a
watch it resumes from the last version seen; on `410 Gone` (or any ERROR event) it lists again.
Retryable API failures back off (0.5 s doubling to 10 s); others propagate (bad RBAC is
the operator's to fix). After the first list and after every applied event it calls
`on_change()` (on the loop's thread); `objects` then holds the parsed objects by
(namespace, name).

`parse(manifest)` turns a manifest into the value stored (e.g. a `meshcore.model` object); when
it raises `ValueError`, the object is logged once and left out.
Invariant: `objects` only changes between awaits, in `run()`'s task (single writer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from meshcore.kube.client import KubeApiError, KubeClient

log = logging.getLogger("meshcore.kube.informer")
T = TypeVar("T")
Key = tuple[str, str]


def key_of(manifest: Mapping[str, Any]) -> Key:
    meta = manifest.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer(Generic[T]):
    """A live, parsed copy of one collection; see the module docstring."""

    def __init__(self, client: KubeClient, path: str, parse: Callable[[Mapping[str, Any]], T], *,
                 on_change: Callable[[], None] = lambda: None,
                 field_selector: str | None = None, label_selector: str | None = None,
                 watch_timeout: int = 300) -> None:
        self.client = client
        self.path = path
        self.parse = parse
        self.on_change = on_change
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.objects: dict[Key, T] = {}
        self.synced = False
        self.stats = {"lists": 0, "watches": 0, "events": 0, "invalid": 0, "api_errors": 0}

    async def run(self) -> None:
        """List and watch forever (until cancelled)."""
        backoff = 0.5
        version = ""
        while True:
            try:
                if not version:
                    version = await self._list()
                version = await self._watch(version)
                backoff = 0.5
            except KubeApiError as exc:
                if not exc.retryable:
                    raise
                self.stats["api_errors"] += 1
                log.warning("%s: %s; retrying in %.1f s", self.path, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _list(self) -> str:
        items, version = await self.client.list_with_version(
            self.path, label_selector=self.label_selector, field_selector=self.field_selector)
        self.stats["lists"] += 1
        objects: dict[Key, T] = {}
        for item in items:
            parsed = self._parse(item)
            if parsed is not None:
                objects[key_of(item)] = parsed
        self.objects = objects
        self.synced = True
        self.on_change()
        return version

    async def _watch(self, version: str) -> str:
        """One watch request; the version to resume from ("" = list again)."""
        self.stats["watches"] += 1
        async for event in self.client.watch(
                self.path, resource_version=version, label_selector=self.label_selector,
                field_selector=self.field_selector, timeout_seconds=self.watch_timeout):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                log.info("%s: watch error %s; listing again", self.path, obj.get("message"))
                return ""
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            self.stats["events"] += 1
            key = key_of(obj)
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                parsed = self._parse(obj)
                if parsed is None:
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = parsed
            self.on_change()
        return version

    def _parse(self, manifest: Mapping[str, Any]) -> T | None:
        try:
            return self.parse(manifest)
        except ValueError as exc:
            self.stats["invalid"] += 1
            ns, name = key_of(manifest)
            log.warning("%s: ignoring %s: %s", self.path, f"{ns}/{name}" if ns else name, exc)
            return None
