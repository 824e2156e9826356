"""The Kubernetes resources the kopf config source watches, and which of their objects it keeps.

Read by `istiod_lite.config.kubernetes` (one kopf index + one event handler per entry), by
`istiod_lite.config.kube.cache` (to fill in `apiVersion`/`kind` that list responses may leave
out of items) and by `istiod_lite.config.kube.status` (which kinds get a status condition).
Pure data and pure functions; no kopf, no I/O.

Invariants: one entry per model kind in `meshcore.model.KINDS`; `plural` is the API resource
name used in URLs and RBAC rules (docs/kubernetes-source.md lists the same table).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
# EndpointSlices this controller writes belong to Services *with* selectors; the mesh takes
# those endpoints from Pods, so such slices are not kept (see `wanted`).
SELECTOR_SLICE_CONTROLLER = "endpointslice-controller.k8s.io"


@dataclasses.dataclass(frozen=True, slots=True)
class WatchedKind:
    kind: str
    group: str  # "" for the core API group
    version: str
    plural: str
    namespaced: bool
    conditions: bool = False  # invalid objects get `status.conditions` (Istio CRDs)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        """The API path of the collection, or of one object (and its subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


WATCHED: tuple[WatchedKind, ...] = (
    WatchedKind("Namespace", "", "v1", "namespaces", namespaced=False),
    WatchedKind("Node", "", "v1", "nodes", namespaced=False),
    WatchedKind("Pod", "", "v1", "pods", namespaced=True),
    WatchedKind("Service", "", "v1", "services", namespaced=True),
    WatchedKind("ServiceAccount", "", "v1", "serviceaccounts", namespaced=True),
    WatchedKind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", namespaced=True),
    WatchedKind("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies",
                namespaced=True, conditions=True),
    WatchedKind("PeerAuthentication", "security.istio.io", "v1", "peerauthentications",
                namespaced=True, conditions=True),
    WatchedKind("Gateway", "gateway.networking.k8s.io", "v1", "gateways", namespaced=True),
    WatchedKind("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes", namespaced=True),
)

BY_KIND: Mapping[str, WatchedKind] = {w.kind: w for w in WATCHED}


def wanted(kind: str, body: Mapping[str, Any]) -> bool:
    """Should an object of `kind` be in the model at all (before validation)?

    Every object is, except EndpointSlices written by Kubernetes' own EndpointSlice controller:
    those mirror Services with selectors, whose endpoints the mesh derives from Pods. Slices of
    selector-less Services (hand-written, or mirrored from Endpoints) are kept.
    """
    if kind != "EndpointSlice":
        return True
    meta = body.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping):
        return True
    return labels.get(MANAGED_BY_LABEL) != SELECTOR_SLICE_CONTROLLER
