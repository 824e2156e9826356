"""HTTPRoute status, pure parts: the per-parentRef verdict of the translation
(`translate.routes.route_statuses`), the `status.parents` merge patch
(`config.kube.route_status.status_patch`) and the feed between them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from istiod_lite.config import ManifestFolderSource
from istiod_lite.config.kube.route_status import (
    CONTROLLER_NAME,
    RouteStatusFeed,
    status_patch,
)
from istiod_lite.config.kubernetes import KubernetesSource
from istiod_lite.config.source import RouteStatusSink
from istiod_lite.translate import MeshConfig
from istiod_lite.translate.route_status import RouteStatus, route_statuses
from meshcore.model import ClusterModel, parse_object
from tests.istiod_lite.kube import factories as f

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
OTHER_CONTROLLER = "example.net/other-controller"


def model_of(*docs: dict[str, Any]) -> ClusterModel:
    return ClusterModel.from_objects(parse_object(d) for d in docs)


def conditions(entry: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in entry["conditions"]}


def status_of(model: ClusterModel, name: str = "r") -> RouteStatus:
    return route_statuses(model)[("shop", name)]


BASE = (f.namespace("shop"), f.service("shop", "web", "10.96.0.10", {"app": "web"}))


# -- the translation's verdict -----------------------------------------------------------------

def test_missing_backend_is_resolved_refs_false_and_parent_accepted():
    """A backendRef to a missing Service: ResolvedRefs False/BackendNotFound naming it."""
    st = status_of(model_of(*BASE, f.http_route("shop", "r", [f.service_parent("web")],
                                                ["missing"])))
    assert len(st.parents) == 1
    conds = {c.type: c for c in st.parents[0].conditions}
    assert (conds["Accepted"].status, conds["Accepted"].reason) == (True, "Accepted")
    refs = conds["ResolvedRefs"]
    assert (refs.status, refs.reason) == (False, "BackendNotFound")
    assert "shop/missing" in refs.message and "spec.rules[0].backendRefs[0]" in refs.message
    assert st.parents[0].parent_ref == f.service_parent("web")


@pytest.mark.parametrize(("parent", "backend_kind", "accepted", "refs"), [
    pytest.param(f.service_parent("web"), "Service", (True, "Accepted"),
                 (True, "ResolvedRefs"), id="all-good"),
    pytest.param(f.service_parent("nope"), "Service", (False, "NoMatchingParent"),
                 (True, "ResolvedRefs"), id="parent-service-missing"),
    pytest.param(f.service_parent("web", namespace="other"), "Service",
                 (False, "UnsupportedValue"), (True, "ResolvedRefs"), id="consumer-route"),
    pytest.param(f.service_parent("web"), "ConfigMap", (True, "Accepted"),
                 (False, "InvalidKind"), id="backend-kind-unsupported"),
    pytest.param(f.gateway_parent("waypoint"), "Service", (True, "Accepted"),
                 (True, "ResolvedRefs"), id="waypoint-gateway"),
])
def test_parent_verdicts(parent, backend_kind, accepted, refs):
    """Accepted and ResolvedRefs per parent kind and backend problem."""
    route = f.http_route("shop", "r", [parent], ["web"])
    route["spec"]["rules"][0]["backendRefs"][0]["kind"] = backend_kind
    st = status_of(model_of(*BASE, f.namespace("other"),
                            f.service("other", "web", "10.96.0.11"),
                            f.waypoint_gateway("shop", "waypoint"), route))
    conds = {c.type: c for c in st.parents[0].conditions}
    assert (conds["Accepted"].status, conds["Accepted"].reason) == accepted
    assert (conds["ResolvedRefs"].status, conds["ResolvedRefs"].reason) == refs
    assert conds["ResolvedWaypoints"].status is True


def test_parent_service_missing_message_names_it():
    """Istio's wording: parent service: "<name>" not found."""
    st = status_of(model_of(*BASE, f.http_route("shop", "r", [f.service_parent("nope")],
                                                ["web"])))
    accepted = st.parents[0].conditions[0]
    assert accepted.message == 'parent service: "nope" not found'


def test_parents_that_are_not_ours_get_no_entry():
    """Gateways of another class, missing Gateways: other controllers' business."""
    route = f.http_route("shop", "r", [f.gateway_parent("ingress"), f.gateway_parent("ghost"),
                                       f.service_parent("web")], ["web"])
    st = status_of(model_of(*BASE, f.waypoint_gateway("shop", "ingress", "istio"), route))
    assert [p.parent_ref["name"] for p in st.parents] == ["web"]
    assert st.generation == 1


def test_waypoint_label_is_reported_in_resolved_waypoints():
    """Without istio.io/use-waypoint the route is accepted but the message says it is unused."""
    route = f.http_route("shop", "r", [f.service_parent("web")], ["web"])
    plain = status_of(model_of(*BASE, route)).parents[0].conditions[2]
    assert "istio.io/use-waypoint label missing" in plain.message and plain.status is True
    labelled = status_of(model_of(f.namespace("shop", {"istio.io/use-waypoint": "waypoint"}),
                                  *BASE[1:], route)).parents[0].conditions[2]
    assert labelled.message == "All waypoints resolved"


# -- the status patch ----------------------------------------------------------------------------

def _route_with(status: dict[str, Any] | None, backends: list[str], *, generation: int = 1,
                resource_version: str = "") -> dict[str, Any]:
    return f.http_route("shop", "r", [f.service_parent("web")], backends, status=status,
                        generation=generation, resource_version=resource_version)


def _desired(backends: list[str], generation: int = 1) -> RouteStatus:
    return status_of(model_of(*BASE, _route_with(None, backends, generation=generation)))


def test_first_patch_writes_our_entry_with_generation_and_time():
    """A route without status gets one entry of ours, with observedGeneration and now."""
    patch = status_patch(_route_with(None, ["missing"], generation=3, resource_version="42"),
                         _desired(["missing"], generation=3), now=T0)
    assert patch is not None and patch["metadata"] == {"resourceVersion": "42"}
    [entry] = patch["status"]["parents"]
    assert entry["controllerName"] == CONTROLLER_NAME
    assert entry["parentRef"] == f.service_parent("web")
    conds = conditions(entry)
    assert set(conds) == {"Accepted", "ResolvedRefs", "ResolvedWaypoints"}
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == T0
               for c in conds.values())
    assert conds["ResolvedRefs"]["status"] == "False"


def test_same_status_again_writes_nothing():
    """Once the object says what we want, the patch is None (no loop on our own event)."""
    first = status_patch(_route_with(None, ["missing"]), _desired(["missing"]), now=T0)
    assert first is not None
    assert status_patch(_route_with(first["status"], ["missing"]), _desired(["missing"]),
                        now=T1) is None


def test_transition_time_moves_only_with_the_status():
    """Fixing the backend flips ResolvedRefs (new time); Accepted keeps its time."""
    first = status_patch(_route_with(None, ["missing"]), _desired(["missing"]), now=T0)
    assert first is not None
    fixed = status_patch(_route_with(first["status"], ["web"]), _desired(["web"]), now=T1)
    assert fixed is not None
    conds = conditions(fixed["status"]["parents"][0])
    assert conds["ResolvedRefs"]["status"] == "True"
    assert conds["ResolvedRefs"]["reason"] == "ResolvedRefs"
    assert conds["ResolvedRefs"]["lastTransitionTime"] == T1
    assert conds["Accepted"]["lastTransitionTime"] == T0


def test_other_controllers_entries_are_kept_in_place():
    """Another controller's entry (same parentRef even) survives untouched and first."""
    theirs = {"parentRef": f.service_parent("web"), "controllerName": OTHER_CONTROLLER,
              "conditions": [{"type": "Accepted", "status": "False", "reason": "Theirs",
                              "message": "not ours", "lastTransitionTime": T0}]}
    patch = status_patch(_route_with({"parents": [theirs]}, ["web"]), _desired(["web"]), now=T1)
    assert patch is not None
    parents = patch["status"]["parents"]
    assert parents[0] == theirs
    assert [p["controllerName"] for p in parents] == [OTHER_CONTROLLER, CONTROLLER_NAME]


def test_stale_entries_of_ours_are_dropped_and_unknown_conditions_kept():
    """Our entry for a parentRef no longer in the spec goes; extra condition types stay."""
    stale = {"parentRef": f.service_parent("gone"), "controllerName": CONTROLLER_NAME,
             "conditions": []}
    current = {"parentRef": f.service_parent("web"), "controllerName": CONTROLLER_NAME,
               "conditions": [{"type": "example.net/Extra", "status": "True", "reason": "X",
                               "message": "", "lastTransitionTime": T0}]}
    patch = status_patch(_route_with({"parents": [stale, current]}, ["web"]),
                         _desired(["web"]), now=T1)
    assert patch is not None
    [entry] = patch["status"]["parents"]
    assert entry["parentRef"]["name"] == "web"
    assert [c["type"] for c in entry["conditions"]] == [
        "example.net/Extra", "Accepted", "ResolvedRefs", "ResolvedWaypoints"]


def test_no_parents_of_ours_and_no_status_writes_nothing():
    """A route attached only to other controllers' Gateways gets no write at all."""
    route = f.http_route("shop", "r", [f.gateway_parent("ingress")], ["web"])
    desired = status_of(model_of(*BASE, route))
    assert desired.parents == ()
    assert status_patch(route, desired, now=T0) is None


# -- the feed -------------------------------------------------------------------------------------

class RecordingSink:
    """Stands in for the Kubernetes source (the feed is what is under test here)."""

    def __init__(self) -> None:
        self.received: list[Mapping[tuple[str, str], Any]] = []

    def report_route_statuses(self, statuses: Mapping[tuple[str, str], Any]) -> None:
        self.received.append(statuses)


def test_feed_recomputes_only_when_route_inputs_change():
    """Pods changing does not recompute route status; a new Service does."""
    sink = RecordingSink()
    feed = RouteStatusFeed(sink, route_statuses)
    model = model_of(*BASE, _route_with(None, ["missing"]))
    feed(model, MeshConfig())
    feed(model.with_object(parse_object(f.pod("shop", "a", "10.1.0.9"))), MeshConfig())
    assert len(sink.received) == 1
    fixed = model.with_object(parse_object(f.service("shop", "missing", "10.96.0.12")))
    feed(fixed, MeshConfig())
    assert len(sink.received) == 2
    refs = sink.received[1][("shop", "r")].parents[0].conditions[1]
    assert refs.status is True


def test_feed_survives_a_failing_computation(caplog):
    """A bug in the computation is logged; nothing is handed over, nothing raises."""
    def broken(model: ClusterModel, mesh: MeshConfig) -> dict[tuple[str, str], RouteStatus]:
        raise RuntimeError("boom")

    sink = RecordingSink()
    RouteStatusFeed(sink, broken)(model_of(*BASE), MeshConfig())
    assert sink.received == []
    assert "could not compute HTTPRoute statuses" in caplog.text


def test_only_the_kubernetes_source_takes_route_statuses(tmp_path):
    """The manifest-folder source has no status to write; app.py feeds only a sink."""
    assert not isinstance(ManifestFolderSource(tmp_path), RouteStatusSink)
    assert isinstance(KubernetesSource(), RouteStatusSink)
