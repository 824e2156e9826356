"""Writes HTTPRoute `status.parents` for the Kubernetes source (asyncio; the kopf loop only).

Called by istiod_lite.config.kubernetes: `remember(body)` from the HTTPRoute index handler,
`forget(body)` / `reconcile(key)` from the HTTPRoute event handler, and `set_desired(statuses)`
when istiod_lite.app hands over new route statuses (`KubernetesSource.report_route_statuses`
crosses threads to call it). Patches are built by the pure `kube.route_status.status_patch`
and sent through the source's `KubeClient` (merge patch of the `status` subresource).

Invariants: one writer per route at a time (one lock for all routes; they are few and writes
are rare); the object the API returns for our patch replaces the one we knew, and an event
still carrying the resourceVersion we patched is ignored, so neither our own MODIFIED event
nor a repeated `set_desired` writes again. A failed write is counted; a retryable failure is
tried again once after `retry_delay` (and on the route's next event).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from istiod_lite.config.kube import route_status
from istiod_lite.config.kube.kinds import BY_KIND
from meshcore.kube import KubeApiError, KubeClient

log = logging.getLogger("istiod_lite.config")
RETRY_DELAY = 10.0  # seconds before a failed write is tried again


def route_key(body: Mapping[str, Any]) -> route_status.RouteKey:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _resource_version(body: Mapping[str, Any]) -> str:
    version = (body.get("metadata") or {}).get("resourceVersion")
    return version if isinstance(version, str) else ""


class RouteStatusWriter:
    """The routes as last seen from the API, the statuses we want on them, and the writes.

    `stats` is the source's statistics dict: `route_status_patches` and
    `route_status_failures` are counted there.
    """

    def __init__(self, api: KubeClient, stats: MutableMapping[str, Any], *,
                 retry_delay: float = RETRY_DELAY) -> None:
        self.api = api
        self.stats = stats
        self.retry_delay = retry_delay
        self.desired: Mapping[route_status.RouteKey, Any] = {}  # RouteStatus by key
        self._routes: dict[route_status.RouteKey, dict[str, Any]] = {}
        self._superseded: dict[route_status.RouteKey, str] = {}  # resourceVersions we patched
        self._retries: set[route_status.RouteKey] = set()
        self._lock = asyncio.Lock()
        stats.setdefault("route_status_patches", 0)
        stats.setdefault("route_status_failures", 0)

    @property
    def retries_pending(self) -> int:
        """Routes with a delayed retry scheduled."""
        return len(self._retries)

    def remember(self, body: Mapping[str, Any]) -> None:
        """Record the route as the API shows it now (from a list or watch event)."""
        key = route_key(body)
        version = _resource_version(body)
        if version and version == self._superseded.get(key):
            return  # older than the object our own patch returned
        self._routes[key] = copy.deepcopy(dict(body))

    def forget(self, body: Mapping[str, Any]) -> None:
        key = route_key(body)
        self._routes.pop(key, None)
        self._superseded.pop(key, None)

    async def set_desired(self, statuses: Mapping[route_status.RouteKey, Any]) -> int:
        """Make `statuses` the wanted ones and write every route that differs; the number of
        routes patched."""
        self.desired = statuses
        written = 0
        for key in sorted(statuses):
            written += await self.reconcile(key)
        return written

    async def reconcile(self, key: route_status.RouteKey) -> int:
        """Patch the route's status if it differs from what we want; 1 when we wrote."""
        async with self._lock:
            body, desired = self._routes.get(key), self.desired.get(key)
            if body is None or desired is None:
                return 0  # not seen from the API yet, or not in the model (yet)
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            patch = route_status.status_patch(body, desired, now=now)
            if patch is None:
                return 0
            path = BY_KIND["HTTPRoute"].path(key[0], key[1], "status")
            try:
                updated = await self.api.merge_patch(path, patch)
            except KubeApiError as exc:
                # 404: deleted meanwhile; 409: changed meanwhile, and the event of that change
                # brings the route back here.
                if exc.status not in (404, 409):
                    self.stats["route_status_failures"] += 1
                    log.warning("could not write the status of HTTPRoute %s/%s: %s",
                                key[0], key[1], exc)
                    if exc.retryable:
                        self._retry_later(key)
                return 0
            self.stats["route_status_patches"] += 1
            if key in self._routes and isinstance(updated, Mapping) and updated.get("metadata"):
                self._routes[key] = dict(updated)
                if version := _resource_version(body):
                    self._superseded[key] = version
            return 1

    def _retry_later(self, key: route_status.RouteKey) -> None:
        """One delayed retry per route: a task on the kopf loop (cancelled when kopf stops)."""
        if key in self._retries:
            return
        self._retries.add(key)

        async def retry() -> None:
            try:
                await asyncio.sleep(self.retry_delay)
            finally:
                self._retries.discard(key)
            await self.reconcile(key)

        task = asyncio.get_running_loop().create_task(retry(), name=f"HTTPRoute status {key}")
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)
