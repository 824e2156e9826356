"""What every config source hands to istiod_lite: `ConfigSnapshot`s of the cluster model.

Implemented by the manifest-folder source (manifest_folder.py) and, later, the Kubernetes
(kopf) source. A source owns one `ClusterModel` and replaces it with a new immutable snapshot
on every change; `watch()` yields the current snapshot first, then one per change.
`Diagnostic` (meshcore.model.diagnostics) is a problem with the user's config (never ours): it
names the file/line or the object (kind, namespace/name, field). Sources log new and resolved
diagnostics on logger `istiod_lite.config` (`log_new`) and keep them on the snapshot for status
reporting (a status condition on Kubernetes). A source that can write Gateway API route status
(the Kubernetes source) also implements `RouteStatusSink`; istiod_lite.app hands it the
translation's `route_statuses` after each snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

from meshcore.model import ClusterModel
from meshcore.model.diagnostics import Diagnostic

# Diagnostic is re-exported.
__all__ = ["ConfigSnapshot", "ConfigSource", "Diagnostic", "RouteStatusSink", "log_new"]

log = logging.getLogger("istiod_lite.config")


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    model: ClusterModel
    diagnostics: tuple[Diagnostic, ...] = ()


class ConfigSource(Protocol):
    """A producer of cluster-model snapshots."""

    @property
    def snapshot(self) -> ConfigSnapshot: ...

    def watch(self) -> AsyncIterator[ConfigSnapshot]: ...


@runtime_checkable
class RouteStatusSink(Protocol):
    """A source that writes HTTPRoute status: takes `istiod_lite.translate.routes.RouteStatus`
    values keyed by (namespace, name); returns at once (the writing happens elsewhere)."""

    def report_route_statuses(self, statuses: Mapping[tuple[str, str], Any]) -> Any: ...


def log_new(previous: tuple[Diagnostic, ...], current: tuple[Diagnostic, ...]) -> None:
    """Log diagnostics that appeared since `previous`, and note the ones that went away."""
    before = set(previous)
    now = set(current)
    for d in current:
        if d not in before:
            log.log(logging.ERROR if d.severity == "error" else logging.WARNING, "%s", d)
    for d in previous:
        if d not in now:
            log.info("resolved: %s", d)
