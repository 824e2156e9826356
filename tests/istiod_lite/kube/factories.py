"""Kubernetes objects as the API serves them (plain dicts), for the Kubernetes source tests."""

from __future__ import annotations

from typing import Any


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": f"uid-ns-{name}", "labels": labels or {}}}


def pod(ns: str, name: str, ip: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-pod-{ns}-{name}",
                         "labels": labels or {"app": name}},
            "spec": {"nodeName": "node-1", "serviceAccountName": name,
                     "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def service(ns: str, name: str, cluster_ip: str,
            selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-svc-{ns}-{name}"},
            "spec": spec}


def endpoint_slice(ns: str, name: str, service_name: str, addresses: list[str],
                   managed_by: str = "") -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name}
    if managed_by:
        labels["endpointslice.kubernetes.io/managed-by"] = managed_by
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-es-{ns}-{name}",
                         "labels": labels},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def authorization_policy(ns: str, name: str, action: str = "DENY",
                         generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-ap-{ns}-{name}",
                         "generation": generation},
            "spec": {"action": action,
                     "rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]}}


def service_parent(name: str, **extra: Any) -> dict[str, Any]:
    """A GAMMA parentRef (a Service), as the API server stores it (group/kind filled in)."""
    return {"group": "", "kind": "Service", "name": name, **extra}


def gateway_parent(name: str, **extra: Any) -> dict[str, Any]:
    return {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name, **extra}


def http_route(ns: str, name: str, parents: list[dict[str, Any]], backends: list[str],
               *, generation: int = 1, status: dict[str, Any] | None = None,
               resource_version: str = "") -> dict[str, Any]:
    """An HTTPRoute with one rule sending to `backends` (Services, port 80)."""
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-hr-{ns}-{name}",
                            "generation": generation}
    if resource_version:
        meta["resourceVersion"] = resource_version
    obj: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": meta,
        "spec": {"parentRefs": parents,
                 "rules": [{"backendRefs": [{"group": "", "kind": "Service", "name": b,
                                             "port": 80, "weight": 1} for b in backends]}]}}
    if status is not None:
        obj["status"] = status
    return obj


def waypoint_gateway(ns: str, name: str, gateway_class: str = "istio-waypoint"
                     ) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-gw-{ns}-{name}",
                         "generation": 1},
            "spec": {"gatewayClassName": gateway_class,
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
