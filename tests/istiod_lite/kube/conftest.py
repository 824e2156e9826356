"""kmock (Kubernetes API emulator) fixtures for the Kubernetes config source tests.

`cluster`: a kmock `KubernetesEmulator` that serves every kind the source watches (plus
Events), with a fix for kmock 0.8's URL parser, which cannot address the `namespaces`
resource itself (`/api/v1/namespaces[/<name>]` is read as "a namespace, no resource").
`running_source`: starts a `KubernetesSource` against it and stops it with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
import pytest_asyncio

from istiod_lite.config.kube.kinds import WATCHED
from istiod_lite.config.kubernetes import KubernetesSource, istiod_client
from istiod_lite.config.source import ConfigSnapshot
from meshcore.kube import KubeClient
from tests.support.kmock_fixes import fix_namespaces_path

DEADLINE = 10.0  # seconds; generous for a loaded CI machine, never reached when it works


def resource_key(plural: str) -> str:
    """kmock's key for a watched resource, e.g. `security.istio.io/v1/authorizationpolicies`."""
    w = next(w for w in WATCHED if w.plural == plural)
    return f"{w.group}/{w.version}/{w.plural}" if w.group else f"v1/{w.plural}"


@pytest.fixture()
def _namespaces_path_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_namespaces_path(monkeypatch)


@pytest_asyncio.fixture()
async def cluster(kmock: Any, _namespaces_path_fix: None) -> Any:
    for w in WATCHED:
        kmock.resources[resource_key(w.plural)] = kmock.ResourceInfo(
            kind=w.kind, namespaced=w.namespaced, verbs={"list", "watch", "get", "patch"},
            subresources={"status"} if w.conditions or w.kind == "HTTPRoute" else set())
    kmock.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True,
                                                       verbs={"create", "list"})
    return kmock


def api_for(cluster: Any) -> KubeClient:
    url = str(cluster.url)
    return istiod_client(login=lambda: kopf.ConnectionInfo(server=url))


@pytest_asyncio.fixture()
async def running_source(cluster: Any) -> AsyncIterator[Callable[..., Any]]:
    """A factory: `await running_source(**kwargs)` starts a source and returns it once synced."""
    tasks: list[tuple[KubernetesSource, asyncio.Task[None]]] = []

    async def start(**kwargs: Any) -> KubernetesSource:
        source = KubernetesSource(api_for(cluster), **kwargs)
        task = asyncio.create_task(source.run(), name="kubernetes source")
        tasks.append((source, task))
        async with asyncio.timeout(DEADLINE):
            await source.wait_synced()
        return source

    yield start
    for source, task in tasks:
        source.stop()
        try:
            async with asyncio.timeout(DEADLINE):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise


async def wait_for_snapshot(source: KubernetesSource,
                            predicate: Callable[[ConfigSnapshot], bool]) -> ConfigSnapshot:
    """The first snapshot (current or later) satisfying `predicate`, within DEADLINE."""
    async with asyncio.timeout(DEADLINE):
        async for snap in source.watch():
            if predicate(snap):
                return snap
    raise AssertionError("watch() ended")


async def api_call(cluster: Any, method: str, path: str, body: Any = None,
                   content_type: str = "application/json") -> Any:
    """One request to the emulated API (as kubectl would make it); fails on HTTP errors."""
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs = {"json": body, "headers": {"Content-Type": content_type}}
    async with cluster.request(method, path, **kwargs) as rsp:
        payload = await rsp.json(content_type=None)
        assert rsp.status < 400, (method, path, rsp.status, payload)
        return payload
