"""Objects for the operator tests, as the API would return them (minimal but well-formed)."""

from __future__ import annotations

from typing import Any

from istiod_lite.operator import components as c

NS = "istio-system"


def mesh(spec: dict[str, Any] | None = None, *, name: str = "default") -> dict[str, Any]:
    return {"apiVersion": f"{c.GROUP}/{c.VERSION}", "kind": c.MESH_KIND,
            "metadata": {"name": name, "uid": f"uid-mesh-{name}", "generation": 1,
                         "resourceVersion": "1"},
            "spec": spec if spec is not None else {"version": "0.1.0"}}


def node(name: str, *, ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": f"uid-{name}"},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def ztunnel_pod(node_name: str, version: str, *, ready: bool = True, synced: bool = True,
                created: str = "2027-01-15T08:00:00Z", suffix: str = "a",
                waiting: str | None = None) -> dict[str, Any]:
    annotations = {c.ZDS_SYNCED_ANNOTATION: "3"} if synced else {}
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if waiting:
        status["containerStatuses"] = [{"name": "istio-proxy", "ready": False, "state": {
            "waiting": {"reason": waiting, "message": "back-off 10s restarting"}}}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"ztunnel-{node_name}-{suffix}", "namespace": NS,
                         "uid": f"uid-zt-{node_name}-{suffix}",
                         "labels": {"app": "ztunnel", c.VERSION_LABEL: version},
                         "annotations": annotations, "creationTimestamp": created},
            "spec": {"nodeName": node_name}, "status": status}


def waypoint_gateway(name: str = "waypoint", namespace: str = "shop", *,
                     listeners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-gw-{name}",
                         "generation": 1, "resourceVersion": "1"},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": listeners if listeners is not None else [
                         {"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
