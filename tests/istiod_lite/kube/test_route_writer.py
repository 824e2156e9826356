"""RouteStatusWriter (the HTTPRoute status writes of the Kubernetes source) with a scripted API
client: failures, the delayed retry, and stale events after our own patch."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from istiod_lite.config.route_writer import RouteStatusWriter
from istiod_lite.translate.route_status import route_statuses
from meshcore.kube import KubeApiError
from meshcore.model import ClusterModel, parse_object
from tests.istiod_lite.kube import factories as f

KEY = ("shop", "r")


class ScriptedApi:
    """Stands in for KubeClient.merge_patch (the client is not under test): fails with the
    scripted HTTP statuses first, then applies the patch like a merge patch of `status`."""

    def __init__(self, route: dict[str, Any], failures: list[int]) -> None:
        self.route = route
        self.failures = failures
        self.calls = 0
        self.patched = asyncio.Event()

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        assert path == "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/r/status"
        if self.failures:
            status = self.failures.pop(0)
            raise KubeApiError("PATCH", path, status, "Scripted", "scripted failure")
        self.route = {**copy.deepcopy(self.route), "status": copy.deepcopy(patch["status"])}
        self.route["metadata"]["resourceVersion"] = str(int(
            self.route["metadata"].get("resourceVersion") or "0") + 1)
        self.patched.set()
        return self.route


def setup(failures: list[int]) -> tuple[RouteStatusWriter, ScriptedApi, dict[str, Any]]:
    route = f.http_route("shop", "r", [f.service_parent("web")], ["missing"],
                         resource_version="7")
    api = ScriptedApi(route, failures)
    writer = RouteStatusWriter(api, {}, retry_delay=0.01)  # type: ignore[arg-type]
    model = ClusterModel.from_objects(parse_object(d) for d in (
        f.namespace("shop"), f.service("shop", "web", "10.96.0.10"), route))
    writer.desired = route_statuses(model)
    writer.remember(route)
    return writer, api, route


@pytest.mark.asyncio
async def test_writes_once_and_ignores_the_stale_event_of_the_patched_version():
    """One write; replaying the pre-patch event (same resourceVersion) writes nothing."""
    writer, api, route = setup([])
    assert await writer.reconcile(KEY) == 1
    writer.remember(route)  # a late event of the version we patched
    assert await writer.reconcile(KEY) == 0
    writer.remember(api.route)  # our own MODIFIED event
    assert await writer.reconcile(KEY) == 0
    assert api.calls == 1 and writer.stats["route_status_patches"] == 1


@pytest.mark.asyncio
async def test_retryable_failure_is_retried_later():
    """A 503 is counted and retried after the delay, without any new event."""
    writer, api, _ = setup([503])
    assert await writer.reconcile(KEY) == 0
    assert writer.stats["route_status_failures"] == 1 and writer.retries_pending == 1
    async with asyncio.timeout(5):
        await api.patched.wait()
    assert api.calls == 2 and writer.stats["route_status_patches"] == 1


@pytest.mark.parametrize("status", [
    pytest.param(404, id="deleted-meanwhile"),
    pytest.param(409, id="changed-meanwhile"),
    pytest.param(403, id="forbidden-not-retryable"),
])
@pytest.mark.asyncio
async def test_non_retried_failures(status):
    """404/409 are silent (an event follows); 403 is counted; none is retried on a timer."""
    writer, api, _ = setup([status])
    assert await writer.reconcile(KEY) == 0
    assert writer.stats["route_status_failures"] == (1 if status == 403 else 0)
    assert writer.retries_pending == 0 and api.calls == 1
