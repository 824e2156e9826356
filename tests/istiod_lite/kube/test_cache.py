"""The Kubernetes source's pure parts: the cache's last-good rules and the status reconcilers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from istiod_lite.config.kube import cache, status
from istiod_lite.config.kube.kinds import BY_KIND, WATCHED, wanted
from istiod_lite.config.source import Diagnostic
from meshcore.model import KINDS, AuthorizationPolicy
from tests.istiod_lite.kube import factories as f

AP = BY_KIND["AuthorizationPolicy"]
POD = BY_KIND["Pod"]
NOW = "2026-01-01T00:00:00Z"


def bad_policy() -> dict[str, Any]:
    return f.authorization_policy("shop", "p", "ALLOWW")


def test_every_model_kind_is_watched():
    """The watched resources are exactly the model's kinds."""
    assert sorted(w.kind for w in WATCHED) == sorted(KINDS)


@pytest.mark.parametrize(("kind", "ns", "name", "sub", "path"), [
    pytest.param("Pod", "shop", "", "", "/api/v1/namespaces/shop/pods", id="core collection"),
    pytest.param("Namespace", "", "shop", "", "/api/v1/namespaces/shop", id="cluster-scoped"),
    pytest.param("AuthorizationPolicy", "shop", "p", "status",
                 "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/p/status",
                 id="CRD status subresource"),
])
def test_api_paths(kind, ns, name, sub, path):
    """Paths follow the Kubernetes URL layout."""
    assert BY_KIND[kind].path(ns, name, sub) == path


def test_valid_object_enters_the_model():
    """A valid object is added and has no diagnostic."""
    out = cache.upsert(cache.KubeCache.empty(), AP, f.authorization_policy("shop", "p"))
    assert isinstance(out.cache.model.get("AuthorizationPolicy", "shop", "p"),
                      AuthorizationPolicy)
    assert out.diagnostic is None and out.cache.snapshot.diagnostics == ()


def test_list_items_without_type_meta_are_typed_from_the_resource():
    """Items of a list response lack apiVersion/kind; the watched resource supplies them."""
    body = f.pod("shop", "web", "10.1.0.5")
    del body["apiVersion"], body["kind"]
    out = cache.upsert(cache.KubeCache.empty(), POD, body)
    assert out.cache.model.get("Pod", "shop", "web") is not None


def test_invalid_update_keeps_the_last_good_version():
    """An object turned invalid stays in its last good version, with a diagnostic."""
    good = cache.upsert(cache.KubeCache.empty(), AP, f.authorization_policy("shop", "p")).cache
    out = cache.upsert(good, AP, bad_policy())
    assert out.cache.model is good.model
    assert out.diagnostic is not None and out.diagnostic.field == "spec.action"
    assert out.diagnostic.message.endswith("keeping its last good version")
    assert out.cache.snapshot.diagnostics == (out.diagnostic,)


def test_invalid_new_object_is_rejected():
    """An object never seen valid stays out of the model."""
    out = cache.upsert(cache.KubeCache.empty(), AP, bad_policy())
    assert out.cache.model.get("AuthorizationPolicy", "shop", "p") is None
    assert out.diagnostic.message.endswith("object rejected")
    assert (out.diagnostic.kind, out.diagnostic.namespace, out.diagnostic.name) == (
        "AuthorizationPolicy", "shop", "p")


def test_fixing_an_object_clears_its_diagnostic():
    """A valid version after an invalid one replaces it and drops the diagnostic."""
    broken = cache.upsert(cache.KubeCache.empty(), AP, bad_policy())
    out = cache.upsert(broken.cache, AP, f.authorization_policy("shop", "p", "ALLOW"))
    assert out.previous == broken.diagnostic and out.diagnostic is None
    assert out.cache.model.get("AuthorizationPolicy", "shop", "p").action == "ALLOW"
    assert out.cache.diagnostics == {}


def test_deletion_removes_object_and_diagnostic():
    """Deleting removes the last good version and the object's diagnostic."""
    c = cache.upsert(cache.KubeCache.empty(), AP, f.authorization_policy("shop", "p")).cache
    c = cache.upsert(c, AP, bad_policy()).cache
    out = cache.remove(c, AP, bad_policy())
    assert out.cache.model.get("AuthorizationPolicy", "shop", "p") is None
    assert out.cache.diagnostics == {}


def test_unchanged_event_keeps_the_same_cache():
    """Re-delivering an identical object (or an identical problem) changes nothing."""
    c = cache.upsert(cache.KubeCache.empty(), AP, f.authorization_policy("shop", "p")).cache
    assert cache.upsert(c, AP, f.authorization_policy("shop", "p")).cache is c
    broken = cache.upsert(c, AP, bad_policy()).cache
    assert cache.upsert(broken, AP, bad_policy()).cache is broken
    assert cache.remove(cache.KubeCache.empty(), AP, bad_policy()).cache.model.revision == 0


@pytest.mark.parametrize(("managed_by", "kept"), [
    pytest.param("", True, id="hand-written slice"),
    pytest.param("endpointslicemirroring-controller.k8s.io", True, id="mirrored from Endpoints"),
    pytest.param("endpointslice-controller.k8s.io", False, id="slice of a selector Service"),
])
def test_which_endpoint_slices_are_kept(managed_by, kept):
    """Only slices that Kubernetes' own controller did not derive from a selector are kept."""
    body = f.endpoint_slice("shop", "s", "svc", ["10.0.0.1"], managed_by=managed_by)
    assert wanted("EndpointSlice", body) is kept
    out = cache.upsert(cache.KubeCache.empty(), BY_KIND["EndpointSlice"], body)
    assert (out.cache.model.get("EndpointSlice", "shop", "s") is not None) is kept


def test_slice_taken_over_by_the_controller_leaves_the_model():
    """A kept slice relabelled as controller-managed is removed."""
    es = BY_KIND["EndpointSlice"]
    body = f.endpoint_slice("shop", "s", "svc", ["10.0.0.1"])
    c = cache.upsert(cache.KubeCache.empty(), es, body).cache
    managed = f.endpoint_slice("shop", "s", "svc", ["10.0.0.1"],
                               managed_by="endpointslice-controller.k8s.io")
    assert cache.upsert(c, es, managed).cache.model.get("EndpointSlice", "shop", "s") is None


# -- status reconcilers ------------------------------------------------------------------------

PROBLEM = Diagnostic("error", "AuthorizationPolicy shop/p: spec.action: unknown value",
                     kind="AuthorizationPolicy", namespace="shop", name="p", field="spec.action")
OTHER = {"type": "Reconciled", "status": "True", "reason": "Ok", "message": ""}


def with_conditions(*conditions: dict[str, Any]) -> dict[str, Any]:
    body = f.authorization_policy("shop", "p", generation=4)
    body["status"] = {"conditions": [copy.deepcopy(c) for c in conditions]}
    return body


def invalid_condition(message: str = PROBLEM.message, ltt: str = "2025-01-01T00:00:00Z"
                      ) -> dict[str, Any]:
    return {"type": "Accepted", "status": "False", "reason": "Invalid", "message": message,
            "observedGeneration": 4, "lastTransitionTime": ltt}


def test_invalid_policy_gets_accepted_false():
    """An invalid policy without conditions gets Accepted=False/Invalid with the message."""
    patch = status.condition_patch(AP, with_conditions(OTHER), PROBLEM, now=NOW)
    assert patch == {"status": {"conditions": [OTHER, {
        "type": "Accepted", "status": "False", "reason": "Invalid", "message": PROBLEM.message,
        "observedGeneration": 4, "lastTransitionTime": NOW}]}}


def test_condition_already_written_needs_no_patch():
    """Our own patch coming back as a watch event does not cause another patch."""
    assert status.condition_patch(AP, with_conditions(invalid_condition()), PROBLEM,
                                  now=NOW) is None


def test_new_message_keeps_the_transition_time():
    """A different problem on a still-invalid object keeps lastTransitionTime."""
    patch = status.condition_patch(AP, with_conditions(invalid_condition("old")), PROBLEM,
                                   now=NOW)
    cond = patch["status"]["conditions"][0]
    assert cond["message"] == PROBLEM.message
    assert cond["lastTransitionTime"] == "2025-01-01T00:00:00Z"


def test_fixed_policy_flips_to_accepted_true():
    """Once valid, our Accepted=False becomes Accepted=True; other conditions are kept."""
    patch = status.condition_patch(AP, with_conditions(invalid_condition(), OTHER), None,
                                   now=NOW)
    first, second = patch["status"]["conditions"]
    assert (first["status"], first["reason"], first["lastTransitionTime"]) == (
        "True", "Accepted", NOW)
    assert second == OTHER


@pytest.mark.parametrize("conditions", [
    pytest.param((), id="no status"),
    pytest.param((OTHER,), id="only others' conditions"),
    pytest.param(({"type": "Accepted", "status": "False", "reason": "Elsewhere"},),
                 id="someone else's Accepted=False"),
])
def test_valid_policy_we_never_marked_is_left_alone(conditions):
    """We write status only to report (or retract) a problem of ours."""
    assert status.condition_patch(AP, with_conditions(*conditions), None, now=NOW) is None


def test_core_kinds_get_no_condition():
    """Kinds without a status condition of ours are never patched."""
    assert status.condition_patch(POD, f.pod("shop", "w", "10.0.0.1"), PROBLEM, now=NOW) is None


def test_warning_event_for_a_new_problem():
    """A new problem of a core object becomes one Warning Event naming the object."""
    body = f.pod("shop", "w", "10.0.0.1")
    event = status.warning_event(POD, body, PROBLEM, None, now=NOW)
    assert event["type"] == "Warning" and event["reason"] == "InvalidConfig"
    assert event["metadata"] == {"generateName": "w.", "namespace": "shop"}
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "w",
                                       "namespace": "shop", "uid": "uid-pod-shop-w"}
    assert event["message"] == PROBLEM.message


@pytest.mark.parametrize(("watched", "diag", "previous"), [
    pytest.param(POD, PROBLEM, PROBLEM, id="same problem as last reported"),
    pytest.param(POD, None, PROBLEM, id="no problem"),
    pytest.param(AP, PROBLEM, None, id="kind reported by condition"),
])
def test_no_warning_event(watched, diag, previous):
    """No Event for a problem already reported, for a valid object, or for condition kinds."""
    assert status.warning_event(watched, f.pod("shop", "w", "10.0.0.1"), diag, previous,
                                now=NOW) is None


def test_cluster_scoped_events_go_to_default():
    """Events about a Namespace or Node are recorded in the default namespace."""
    event = status.warning_event(BY_KIND["Namespace"], f.namespace("shop"), PROBLEM, None,
                                 now=NOW)
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]
