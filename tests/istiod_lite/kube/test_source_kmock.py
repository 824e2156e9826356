"""The kopf-based Kubernetes config source against kmock, an emulated Kubernetes API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from istiod_lite.config.source import ConfigSnapshot
from meshcore.model import AuthorizationPolicy, EndpointSlice, Pod
from tests.istiod_lite.kube import factories as f
from tests.istiod_lite.kube.conftest import DEADLINE, api_call, resource_key, wait_for_snapshot

AP_PATH = "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies"
MERGE = "application/merge-patch+json"


def seed(cluster: Any, *objects: dict[str, Any]) -> None:
    """Store objects in the emulator before the source starts (they exist 'at start')."""
    plurals = {"Namespace": "namespaces", "Pod": "pods", "Service": "services",
               "EndpointSlice": "endpointslices", "AuthorizationPolicy": "authorizationpolicies"}
    for obj in objects:
        meta = obj["metadata"]
        cluster.objects[resource_key(plurals[obj["kind"]]), meta.get("namespace"),
                        meta["name"]] = obj


async def watch_api_until(cluster: Any, path: str,
                          predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Watch `path` on the emulated API (as `kubectl get -w` does) until an object matches."""
    async with asyncio.timeout(DEADLINE), cluster.get(path, params={"watch": "true"}) as rsp:
        async for line in rsp.content:
            if line.strip():
                obj = json.loads(line)["object"]
                if predicate(obj):
                    return obj
    raise AssertionError(f"watch of {path} ended")


def accepted(obj: dict[str, Any]) -> dict[str, Any] | None:
    conds = obj.get("status", {}).get("conditions", [])
    return next((c for c in conds if c.get("type") == "Accepted"), None)


@pytest.mark.asyncio
async def test_objects_present_at_start_are_in_the_first_snapshot(cluster, running_source):
    """Everything listed at start (all kinds) is in the first snapshot watch() yields."""
    seed(cluster, f.namespace("shop", {"istio.io/dataplane-mode": "ambient"}),
         f.pod("shop", "web", "10.1.0.5"), f.service("shop", "web", "10.96.0.10", {"app": "web"}),
         f.authorization_policy("shop", "deny-other"))
    source = await running_source()
    first = await wait_for_snapshot(source, lambda s: True)
    model = first.model
    assert model.namespace_labels("shop") == {"istio.io/dataplane-mode": "ambient"}
    pod = model.get("Pod", "shop", "web")
    assert isinstance(pod, Pod) and pod.pod_ips == ("10.1.0.5",)
    assert model.get("Service", "shop", "web") is not None
    ap = model.get("AuthorizationPolicy", "shop", "deny-other")
    assert isinstance(ap, AuthorizationPolicy) and ap.action == "DENY"
    assert first.diagnostics == ()
    assert source.statistics()["synced"] is True


@pytest.mark.asyncio
async def test_create_update_delete_produce_new_snapshots(cluster, running_source):
    """A created, then relabelled, then deleted pod shows up in successive snapshots."""
    seed(cluster, f.namespace("shop"))
    source = await running_source()
    revision = source.snapshot.model.revision

    await api_call(cluster, "POST", "/api/v1/namespaces/shop/pods", f.pod("shop", "a", "10.1.0.7"))
    snap = await wait_for_snapshot(source, lambda s: s.model.get("Pod", "shop", "a") is not None)
    assert snap.model.revision > revision

    await api_call(cluster, "PATCH", "/api/v1/namespaces/shop/pods/a",
                   {"metadata": {"labels": {"app": "a", "version": "v2"}}}, MERGE)
    snap = await wait_for_snapshot(
        source, lambda s: s.model.get("Pod", "shop", "a").labels.get("version") == "v2")

    await api_call(cluster, "DELETE", "/api/v1/namespaces/shop/pods/a")
    snap = await wait_for_snapshot(source, lambda s: s.model.get("Pod", "shop", "a") is None)
    assert snap.model.namespace("shop") is not None


def _policy_problem(snap: ConfigSnapshot) -> Any:
    return next((d for d in snap.diagnostics if d.kind == "AuthorizationPolicy"), None)


@pytest.mark.asyncio
async def test_invalid_policy_is_rejected_reported_and_last_good_kept(cluster, running_source,
                                                                      caplog):
    """A policy turned invalid: diagnostic names it and the field, status condition patched,
    its last good version stays, other objects keep flowing; fixing it clears all that."""
    caplog.set_level(logging.INFO, logger="istiod_lite.config")
    seed(cluster, f.namespace("shop"), f.authorization_policy("shop", "deny-other"))
    source = await running_source()

    await api_call(cluster, "PATCH", f"{AP_PATH}/deny-other",
                   {"metadata": {"generation": 2}, "spec": {"action": "ALLOWW"}}, MERGE)
    snap = await wait_for_snapshot(source, lambda s: _policy_problem(s) is not None)
    problem = _policy_problem(snap)
    assert (problem.namespace, problem.name, problem.field) == ("shop", "deny-other",
                                                                 "spec.action")
    assert "AuthorizationPolicy shop/deny-other: spec.action" in problem.message
    assert "keeping its last good version" in problem.message
    kept = snap.model.get("AuthorizationPolicy", "shop", "deny-other")
    assert isinstance(kept, AuthorizationPolicy) and kept.action == "DENY"
    assert any("shop/deny-other: spec.action" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)

    patched = await watch_api_until(cluster, f"{AP_PATH}",
                                    lambda o: (accepted(o) or {}).get("status") == "False")
    cond = accepted(patched)
    assert cond["reason"] == "Invalid" and cond["observedGeneration"] == 2
    assert "spec.action" in cond["message"] and "deny-other" in cond["message"]

    # Other objects keep flowing while the policy is invalid.
    await api_call(cluster, "POST", "/api/v1/namespaces/shop/pods", f.pod("shop", "b", "10.1.0.8"))
    snap = await wait_for_snapshot(source, lambda s: s.model.get("Pod", "shop", "b") is not None)
    assert _policy_problem(snap) is not None
    assert snap.model.get("AuthorizationPolicy", "shop", "deny-other").action == "DENY"

    # Fixing it replaces the policy, drops the diagnostic and flips the condition.
    await api_call(cluster, "PATCH", f"{AP_PATH}/deny-other",
                   {"metadata": {"generation": 3}, "spec": {"action": "ALLOW"}}, MERGE)
    snap = await wait_for_snapshot(source, lambda s: s.model.get(
        "AuthorizationPolicy", "shop", "deny-other").action == "ALLOW")
    assert snap.diagnostics == ()
    fixed = await watch_api_until(cluster, AP_PATH,
                                  lambda o: (accepted(o) or {}).get("status") == "True")
    assert accepted(fixed)["observedGeneration"] == 3


@pytest.mark.asyncio
async def test_policy_never_valid_is_left_out_and_marked(cluster, running_source):
    """A policy invalid from the start is not in the model, and gets Accepted=False."""
    seed(cluster, f.namespace("shop"))
    source = await running_source()
    await api_call(cluster, "POST", AP_PATH, f.authorization_policy("shop", "typo", "DENNY"))
    snap = await wait_for_snapshot(source, lambda s: _policy_problem(s) is not None)
    assert "object rejected" in _policy_problem(snap).message
    assert snap.model.get("AuthorizationPolicy", "shop", "typo") is None
    patched = await watch_api_until(cluster, AP_PATH, lambda o: accepted(o) is not None)
    assert accepted(patched)["status"] == "False"

    await api_call(cluster, "DELETE", f"{AP_PATH}/typo")
    snap = await wait_for_snapshot(source, lambda s: _policy_problem(s) is None)


@pytest.mark.asyncio
async def test_invalid_core_object_gets_a_warning_event(cluster, running_source):
    """An invalid Service is reported with a Warning Event naming it and the field."""
    seed(cluster, f.namespace("shop"))
    source = await running_source()
    bad = f.service("shop", "broken", "10.96.0.11", {"app": "x"})
    bad["spec"]["ports"][0]["port"] = 70000
    await api_call(cluster, "POST", "/api/v1/namespaces/shop/services", bad)
    snap = await wait_for_snapshot(source, lambda s: bool(s.diagnostics))
    assert snap.diagnostics[0].field == "spec.ports[0].port"
    event = await watch_api_until(cluster, "/api/v1/namespaces/shop/events",
                                  lambda o: o.get("reason") == "InvalidConfig")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Service"
    assert event["involvedObject"]["name"] == "broken"
    assert "spec.ports[0].port" in event["message"]


@pytest.mark.asyncio
async def test_endpoint_slices_of_a_selectorless_service(cluster, running_source):
    """Slices of a selector-less Service are in the model; controller-managed ones are not."""
    seed(cluster, f.namespace("shop"), f.service("shop", "legacy", "10.96.0.20"),
         f.service("shop", "web", "10.96.0.21", {"app": "web"}),
         f.endpoint_slice("shop", "web-abc", "web", ["10.1.0.5"],
                          managed_by="endpointslice-controller.k8s.io"))
    source = await running_source()
    assert source.snapshot.model.get("Service", "shop", "legacy").selector is None
    assert source.snapshot.model.of_kind("EndpointSlice") == {}

    await api_call(cluster, "POST", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
                   f.endpoint_slice("shop", "legacy-1", "legacy", ["192.168.7.1", "192.168.7.2"]))
    snap = await wait_for_snapshot(
        source, lambda s: s.model.get("EndpointSlice", "shop", "legacy-1") is not None)
    es = snap.model.get("EndpointSlice", "shop", "legacy-1")
    assert isinstance(es, EndpointSlice) and es.service_name == "legacy"
    assert [e.addresses for e in es.endpoints] == [("192.168.7.1",), ("192.168.7.2",)]
    assert snap.model.get("EndpointSlice", "shop", "web-abc") is None


@pytest.mark.asyncio
async def test_namespace_scope_limits_namespaced_kinds(cluster, running_source):
    """With namespaces=["shop"], pods elsewhere are not watched; cluster-scoped kinds are."""
    seed(cluster, f.namespace("shop"), f.namespace("other"), f.pod("shop", "in", "10.1.0.5"),
         f.pod("other", "out", "10.1.0.6"))
    source = await running_source(namespaces=["shop"])
    model = source.snapshot.model
    assert model.get("Pod", "shop", "in") is not None
    assert model.get("Pod", "other", "out") is None
    assert model.namespace("other") is not None
