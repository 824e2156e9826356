"""Running and stopping the Kubernetes source's kopf thread."""

from __future__ import annotations

import asyncio
import threading

import kopf
import pytest

from istiod_lite.config.kube.kinds import WATCHED
from istiod_lite.config.kubernetes import KubernetesSource
from meshcore.kube import KubeClient, KubeLoginError
from tests.istiod_lite.kube import factories as f
from tests.istiod_lite.kube.conftest import DEADLINE, api_for, resource_key


def kopf_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "istiod-lite-kopf"]


@pytest.mark.asyncio
async def test_cancelling_run_stops_the_operator_thread(cluster):
    """Cancelling run() stops kopf and its thread before the cancellation propagates."""
    cluster.objects[resource_key("namespaces"), None, "shop"] = f.namespace("shop")
    source = KubernetesSource(api_for(cluster))
    task = asyncio.create_task(source.run())
    async with asyncio.timeout(DEADLINE):
        await source.wait_synced()
    assert len(kopf_threads()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(DEADLINE):
            await task
    # The thread hands over its result just before it returns; join to let it finish.
    for thread in kopf_threads():
        await asyncio.to_thread(thread.join, DEADLINE)
    assert kopf_threads() == []


@pytest.mark.asyncio
async def test_run_is_single_use(cluster):
    """A stopped source cannot be run again (its cache would miss deletions)."""
    cluster.objects[resource_key("namespaces"), None, "shop"] = f.namespace("shop")
    source = KubernetesSource(api_for(cluster))
    task = asyncio.create_task(source.run())
    async with asyncio.timeout(DEADLINE):
        await source.wait_synced()
        source.stop()
        await task
    with pytest.raises(RuntimeError, match="already called"):
        await source.run()


@pytest.mark.asyncio
async def test_login_failure_ends_run_with_an_error():
    """Without credentials, run() fails instead of waiting forever."""
    def no_credentials() -> kopf.ConnectionInfo:
        raise KubeLoginError("no Kubernetes credentials")

    source = KubernetesSource(KubeClient(no_credentials))
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(KubeLoginError, match="no Kubernetes credentials"):
            await source.run()
    assert not source.synced


@pytest.mark.asyncio
async def test_missing_crds_leave_their_kinds_empty(kmock, _namespaces_path_fix):
    """Without the Istio and Gateway API CRDs the source still syncs the core kinds."""
    for w in WATCHED:
        if not w.group or w.group == "discovery.k8s.io":
            kmock.resources[resource_key(w.plural)] = kmock.ResourceInfo(
                kind=w.kind, namespaced=w.namespaced, verbs={"list", "watch"})
    kmock.objects[resource_key("namespaces"), None, "shop"] = f.namespace("shop")
    kmock.objects[resource_key("pods"), "shop", "web"] = f.pod("shop", "web", "10.1.0.5")
    source = KubernetesSource(api_for(kmock))
    task = asyncio.create_task(source.run())
    try:
        async with asyncio.timeout(DEADLINE):
            snap = await source.wait_synced()
        assert snap.model.get("Pod", "shop", "web") is not None
        assert snap.model.of_kind("AuthorizationPolicy") == {}
    finally:
        source.stop()
        async with asyncio.timeout(DEADLINE):
            await task
