"""Tests for ClusterModel snapshots (sharing, updates, lookups) and the enrollment decision."""

from __future__ import annotations

import pytest

from meshcore.model import ClusterModel, Pod, enrollment_decision, parse_object


def pod(name: str, ns: str = "shop", node: str = "n1", labels: dict | None = None,
        annotations: dict | None = None, host_network: bool = False) -> Pod:
    p = parse_object({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name, "namespace": ns, "labels": labels or {},
                                   "annotations": annotations or {}},
                      "spec": {"nodeName": node, "hostNetwork": host_network}})
    assert isinstance(p, Pod)
    return p


def namespace(name: str, labels: dict | None = None):
    return parse_object({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": name, "labels": labels or {}}})


def test_updates_return_new_snapshots_and_share_untouched_kinds() -> None:
    """with_object/without never mutate; untouched kinds are shared by identity."""
    base = ClusterModel.from_objects([pod("a"), namespace("shop")])
    updated = base.with_object(pod("b"))
    assert len(base.pods) == 1 and len(updated.pods) == 2
    assert updated.of_kind("Namespace") is base.of_kind("Namespace")
    assert updated.revision == base.revision + 1
    removed = updated.without("Pod", "shop", "a")
    assert [p.name for p in removed.pods] == ["b"]
    assert removed.without("Pod", "shop", "zzz") is removed
    assert removed.with_object(pod("b")) is removed  # equal object: no new snapshot


def test_lookups() -> None:
    """Pods by node, by selector, namespace labels; deterministic (namespace, name) order."""
    model = ClusterModel.from_objects([
        pod("b", node="n1", labels={"app": "x"}), pod("a", node="n2", labels={"app": "x"}),
        pod("c", ns="other", node="n1", labels={"app": "x"}), namespace("shop", {"k": "v"})])
    assert [p.name for p in model.pods] == ["c", "a", "b"]
    assert [p.name for p in model.pods_on_node("n1")] == ["c", "b"]
    assert [p.name for p in model.pods_matching("shop", {"app": "x"})] == ["a", "b"]
    assert model.pods_matching("shop", {}) == []
    assert len(model.pods_matching("shop", {}, empty_selects_all=True)) == 2
    assert model.pods_matching("shop", None) == []
    assert dict(model.namespace_labels("shop")) == {"k": "v"}
    assert dict(model.namespace_labels("missing")) == {}


AMBIENT_NS = {"istio.io/dataplane-mode": "ambient"}
ENROLLMENT = [
    pytest.param(pod("p"), AMBIENT_NS, True, id="namespace-label"),
    pytest.param(pod("p"), {}, False, id="no-labels"),
    pytest.param(pod("p", labels={"istio.io/dataplane-mode": "ambient"}), {}, True,
                 id="pod-label-any-namespace"),
    pytest.param(pod("p", labels={"istio.io/dataplane-mode": "none"}), AMBIENT_NS, False,
                 id="pod-opt-out"),
    pytest.param(pod("p", host_network=True), AMBIENT_NS, False, id="host-network"),
    pytest.param(pod("p", annotations={"sidecar.istio.io/status": "{}"}), AMBIENT_NS, False,
                 id="sidecar"),
    pytest.param(pod("zt", ns="istio-system", labels={"app": "ztunnel"}), AMBIENT_NS, False,
                 id="ztunnel"),
    pytest.param(pod("cni", ns="istio-system", labels={"k8s-app": "istio-cni-node"}),
                 AMBIENT_NS, False, id="cni-agent"),
]


@pytest.mark.parametrize(("p", "ns_labels", "enrolled"), ENROLLMENT)
def test_enrollment_decision(p: Pod, ns_labels: dict, enrolled: bool) -> None:
    """Enrollment follows Istio's default CNI enablement selectors and exclusions."""
    decision = enrollment_decision(p, ns_labels)
    assert decision.enrolled is enrolled
    assert decision.reason


def test_model_is_enrolled_uses_namespace_labels() -> None:
    """ClusterModel.is_enrolled looks up the pod's namespace in the snapshot."""
    p = pod("p")
    assert not ClusterModel.from_objects([p]).is_enrolled(p)
    assert ClusterModel.from_objects([p, namespace("shop", AMBIENT_NS)]).is_enrolled(p)
    excluded = enrollment_decision(p, AMBIENT_NS, exclude_namespaces=frozenset({"shop"}))
    assert not excluded.enrolled
