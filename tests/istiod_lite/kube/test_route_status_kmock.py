"""HTTPRoute status written by the Kubernetes source, against kmock (an emulated API).

The statuses flow as in istiod_lite.app: source snapshots → `RouteStatusFeed` with the
translation's `route_statuses` → `KubernetesSource.report_route_statuses` → the status
subresource of each route.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from istiod_lite.app import IstiodConfig, run
from istiod_lite.ca.authz import StaticTokenTable
from istiod_lite.config.kube.route_status import CONTROLLER_NAME, RouteStatusFeed
from istiod_lite.config.kubernetes import KubernetesSource
from istiod_lite.translate import MeshConfig
from istiod_lite.translate.route_status import route_statuses
from tests.istiod_lite.kube import factories as f
from tests.istiod_lite.kube.conftest import api_call, resource_key, wait_for_snapshot
from tests.istiod_lite.kube.test_source_kmock import watch_api_until

HR_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes"
OTHER_CONTROLLER = "example.net/other-controller"


def seed(cluster: Any, *objects: dict[str, Any]) -> None:
    """Store objects in the emulator before the source starts."""
    plurals = {"Namespace": "namespaces", "Service": "services", "HTTPRoute": "httproutes",
               "Gateway": "gateways"}
    for obj in objects:
        meta = obj["metadata"]
        cluster.objects[resource_key(plurals[obj["kind"]]), meta.get("namespace"),
                        meta["name"]] = obj


def ours(route: dict[str, Any]) -> dict[str, Any] | None:
    """Our `status.parents` entry on a route (the first), or None."""
    parents = (route.get("status") or {}).get("parents") or []
    return next((p for p in parents if p.get("controllerName") == CONTROLLER_NAME), None)


def condition(route: dict[str, Any], kind: str) -> dict[str, Any]:
    entry = ours(route) or {}
    return next((c for c in entry.get("conditions", []) if c["type"] == kind), {})


def status_patches(cluster: Any, name: str) -> int:
    """PATCH requests kmock received for the status of HTTPRoute shop/<name>."""
    return sum(1 for r in list(cluster) if str(r.method).upper().endswith("PATCH")
               and r.url.path == f"{HR_PATH}/{name}/status")


@pytest_asyncio.fixture()
async def fed_source(running_source: Callable[..., Any]
                     ) -> AsyncIterator[Callable[..., Any]]:
    """A factory: a running source whose snapshots feed route statuses back to it, as in
    istiod_lite.app."""
    tasks: list[asyncio.Task[None]] = []

    async def feed(source: KubernetesSource) -> None:
        route_feed = RouteStatusFeed(source, route_statuses)
        async for snap in source.watch():
            route_feed(snap.model, MeshConfig())

    async def start() -> KubernetesSource:
        source = await running_source()
        tasks.append(asyncio.create_task(feed(source), name="route status feed"))
        return source

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


BASE = (f.namespace("shop"), f.service("shop", "web", "10.96.0.10", {"app": "web"}))


@pytest.mark.asyncio
async def test_missing_backend_then_created(cluster, fed_source):
    """ResolvedRefs=False/BackendNotFound naming the backend, Accepted=True; creating the
    Service flips ResolvedRefs to True."""
    seed(cluster, *BASE, f.http_route("shop", "r", [f.service_parent("web")], ["missing"]))
    await fed_source()
    route = await watch_api_until(cluster, HR_PATH, lambda o: ours(o) is not None)
    entry = ours(route)
    assert entry is not None and entry["parentRef"] == f.service_parent("web")
    refs = condition(route, "ResolvedRefs")
    assert (refs["status"], refs["reason"]) == ("False", "BackendNotFound")
    assert "shop/missing" in refs["message"]
    accepted = condition(route, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("True", "Accepted")
    assert accepted["observedGeneration"] == 1

    await api_call(cluster, "POST", "/api/v1/namespaces/shop/services",
                   f.service("shop", "missing", "10.96.0.12"))
    fixed = await watch_api_until(
        cluster, HR_PATH, lambda o: condition(o, "ResolvedRefs").get("status") == "True")
    assert condition(fixed, "ResolvedRefs")["reason"] == "ResolvedRefs"
    assert condition(fixed, "Accepted")["lastTransitionTime"] == accepted["lastTransitionTime"]


@pytest.mark.asyncio
async def test_missing_parent_service_is_not_accepted(cluster, fed_source):
    """A parentRef Service that does not exist: Accepted=False/NoMatchingParent."""
    seed(cluster, *BASE, f.http_route("shop", "r", [f.service_parent("nope")], ["web"]))
    await fed_source()
    route = await watch_api_until(cluster, HR_PATH, lambda o: ours(o) is not None)
    accepted = condition(route, "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingParent")
    assert '"nope"' in accepted["message"]


@pytest.mark.asyncio
async def test_other_controllers_entry_survives(cluster, fed_source):
    """Another controller's status.parents entry is still there, unchanged, after our patch."""
    theirs = {"parentRef": f.gateway_parent("ingress"), "controllerName": OTHER_CONTROLLER,
              "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                              "message": "theirs", "observedGeneration": 1,
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    seed(cluster, *BASE, f.http_route("shop", "r",
                                      [f.gateway_parent("ingress"), f.service_parent("web")],
                                      ["web"], status={"parents": [theirs]}))
    await fed_source()
    route = await watch_api_until(cluster, HR_PATH, lambda o: ours(o) is not None)
    parents = route["status"]["parents"]
    assert parents[0] == theirs
    assert [p["controllerName"] for p in parents] == [OTHER_CONTROLLER, CONTROLLER_NAME]
    assert ours(route)["parentRef"]["name"] == "web"


@pytest.mark.asyncio
async def test_identical_reconcile_writes_nothing(cluster, running_source):
    """Reporting the same statuses again sends no PATCH; so does our own MODIFIED event."""
    seed(cluster, *BASE, f.http_route("shop", "r", [f.service_parent("web")], ["missing"]))
    source = await running_source()
    snap = await wait_for_snapshot(source,
                                   lambda s: s.model.get("HTTPRoute", "shop", "r") is not None)
    statuses = route_statuses(snap.model, MeshConfig())
    assert await asyncio.wrap_future(source.report_route_statuses(statuses)) == 1
    await watch_api_until(cluster, HR_PATH, lambda o: ours(o) is not None)
    assert await asyncio.wrap_future(source.report_route_statuses(statuses)) == 0
    assert await asyncio.wrap_future(
        source.report_route_statuses(route_statuses(source.snapshot.model, MeshConfig()))) == 0
    assert status_patches(cluster, "r") == 1
    assert source.statistics()["route_status_patches"] == 1


@pytest.mark.asyncio
async def test_route_without_our_parents_is_left_alone(cluster, fed_source):
    """A route attached only to another class's Gateway gets no status from us."""
    seed(cluster, *BASE, f.waypoint_gateway("shop", "ingress", "istio"),
         f.http_route("shop", "other", [f.gateway_parent("ingress")], ["web"]),
         f.http_route("shop", "r", [f.service_parent("web")], ["web"]))
    await fed_source()
    # Routes are reconciled in (namespace, name) order: "other" before "r".
    await watch_api_until(cluster, HR_PATH, lambda o: ours(o) is not None)
    assert status_patches(cluster, "other") == 0
    other = await api_call(cluster, "GET", f"{HR_PATH}/other")
    assert "status" not in other


@pytest.mark.asyncio
async def test_istiod_app_writes_route_status(cluster, running_source, tmp_path):
    """The assembled istiod-lite (app.run) on a Kubernetes source writes route status."""
    seed(cluster, *BASE, f.http_route("shop", "r", [f.service_parent("web")], ["missing"]))
    source = await running_source()
    config = IstiodConfig(manifests=None, ca_dir=tmp_path / "ca", host="127.0.0.1", port=0)
    app = asyncio.create_task(run(config, source=source, authenticator=StaticTokenTable({})))
    try:
        route = await watch_api_until(cluster, HR_PATH, lambda o: ours(o) is not None)
        assert condition(route, "ResolvedRefs")["reason"] == "BackendNotFound"
    finally:
        app.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app
