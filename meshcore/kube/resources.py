"""Kubernetes API paths by kind, and the "does the live object already say this?" test.

Called by `meshcore.kube.client.KubeClient` (paths of manifests it applies) and by its users
(the operator, the CNI agent) to name collections and objects. Pure: no I/O.
`BUILTIN_KINDS` covers the core/apps/rbac/gateway kinds ambient-py touches; a component with a
kind of its own (the operator's Mesh) passes an extended mapping to the client and to `api_path`.
Invariant: every path the client requests on behalf of a kind is built here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API: `apiVersion` ("v1" or "group/version"), plural, scope."""

    api_version: str
    plural: str
    namespaced: bool


BUILTIN_KINDS: Mapping[str, Kind] = {
    "Namespace": Kind("v1", "namespaces", False),
    "Node": Kind("v1", "nodes", False),
    "Pod": Kind("v1", "pods", True),
    "Event": Kind("v1", "events", True),
    "Secret": Kind("v1", "secrets", True),
    "Service": Kind("v1", "services", True),
    "ServiceAccount": Kind("v1", "serviceaccounts", True),
    "Deployment": Kind("apps/v1", "deployments", True),
    "DaemonSet": Kind("apps/v1", "daemonsets", True),
    "ClusterRole": Kind("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": Kind("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Gateway": Kind("gateway.networking.k8s.io/v1", "gateways", True),
    "TokenReview": Kind("authentication.k8s.io/v1", "tokenreviews", False),
}


def api_path(kind: Kind, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
    """The API path of a collection (no name) or an object of `kind`."""
    base = f"/api/{kind.api_version}" if "/" not in kind.api_version \
        else f"/apis/{kind.api_version}"
    if kind.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    out = f"{base}/{kind.plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def contains(live: Any, desired: Any) -> bool:
    """True when every field of `desired` is in `live` with equal value (lists compared whole)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)
