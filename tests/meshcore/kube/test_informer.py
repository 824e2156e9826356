"""`meshcore.kube.Informer`: list then watch one collection into a parsed store (kmock)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from meshcore.kube import KubeApiError
from meshcore.kube.informer import Informer
from tests.meshcore.kube.conftest import client_for, pod

DEADLINE = 10.0


def parse(manifest: Mapping[str, Any]) -> str:
    """Store the pod's node; a pod without one is 'invalid' (ValueError)."""
    node = (manifest.get("spec") or {}).get("nodeName")
    if not node:
        raise ValueError("no spec.nodeName")
    return str(node)


class Changes:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate():
                self.event.clear()
                await self.event.wait()


@contextlib.asynccontextmanager
async def running(informer: Informer[str]) -> Any:
    task = asyncio.create_task(informer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_list_then_watch_keeps_the_store_current(cluster):
    """Listed objects, then adds, changes and deletes from the watch are in `objects`."""
    cluster.objects["v1/pods", "shop", "a"] = pod("shop", "a", node="n1")
    unscheduled = pod("shop", "u")
    unscheduled["spec"]["nodeName"] = ""
    cluster.objects["v1/pods", "shop", "u"] = unscheduled
    changes = Changes()
    async with client_for(cluster) as api:
        informer = Informer(api, api.path("Pod"), parse, on_change=changes)
        async with running(informer):
            await changes.until(lambda: informer.synced)
            assert informer.objects == {("shop", "a"): "n1"}
            assert informer.stats["invalid"] == 1
            await api.create(pod("shop", "b", node="n2"))
            await changes.until(lambda: ("shop", "b") in informer.objects)
            await api.merge_patch(api.path("Pod", "shop", "a"), {"spec": {"nodeName": "n3"}})
            await changes.until(lambda: informer.objects.get(("shop", "a")) == "n3")
            await api.delete(api.path("Pod", "shop", "b"))
            await changes.until(lambda: ("shop", "b") not in informer.objects)
    assert informer.stats["lists"] == 1


@pytest.mark.asyncio
async def test_retryable_failure_is_retried(cluster):
    """A 503 on the first list is retried; the informer then syncs."""
    cluster.objects["v1/pods", "shop", "a"] = pod("shop", "a")
    cluster["list"][:1] << 503
    changes = Changes()
    async with client_for(cluster) as api:
        informer = Informer(api, api.path("Pod"), parse, on_change=changes)
        async with running(informer):
            await changes.until(lambda: informer.synced)
    assert informer.stats["api_errors"] == 1 and informer.objects == {("shop", "a"): "n1"}


@pytest.mark.asyncio
async def test_forbidden_ends_the_informer(cluster):
    """A 403 is not retried: run() raises it (RBAC is for the operator to fix)."""
    cluster["list"] << 403
    async with client_for(cluster) as api:
        informer = Informer(api, api.path("Pod"), parse)
        with pytest.raises(KubeApiError) as info:
            async with asyncio.timeout(DEADLINE):
                await informer.run()
    assert info.value.status == 403 and not informer.synced
