"""Waypoint controller: what a `Gateway` of class `istio-waypoint` turns into, and its status.

Called by the kopf handlers for Gateway API `Gateway` objects (`handlers.py`); they apply the
returned ServiceAccount, Deployment and Service (`api.apply`) and merge-patch the Gateway's
status. Pure: Gateway body + the mesh settings in, manifests and conditions out.

Follows what Istio deploys (AMBIENT-INTERNALS §6.5): all three objects are named after the
Gateway, labelled `gateway.networking.k8s.io/gateway-name`, `.../gateway-class-name`,
`gateway.istio.io/managed=istio.io-mesh-controller`, owned by the Gateway (so deleting the
Gateway garbage-collects them); the pod opts out of capture (`istio.io/dataplane-mode=none`);
the Service is ClusterIP with `status-port` 15021 and one port per listener (`mesh` 15008,
appProtocol `hbone`); the pod mounts the ConfigMap `istio-ca-root-cert` (`rootcert.py`) at
/var/run/secrets/istio, read-only, for `--root-cert`. `status.addresses` is filled only once
a waypoint pod is ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from istiod_lite.operator import components as c
from istiod_lite.operator.reconcile import restricted_security_context, token_volume
from istiod_lite.operator.rollout import Condition
from istiod_lite.operator.spec import MeshSpec

CLUSTER_DOMAIN = "cluster.local"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_CLASS_LABEL = "gateway.networking.k8s.io/gateway-class-name"
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-mesh-controller"


@dataclass(frozen=True)
class WaypointPlan:
    objects: tuple[dict[str, Any], ...]  # empty when the Gateway is refused
    accepted: Condition


def is_waypoint(gateway: Mapping[str, Any]) -> bool:
    return (gateway.get("spec") or {}).get("gatewayClassName") == c.WAYPOINT_CLASS


def reconcile_waypoint(gateway: Mapping[str, Any], mesh: MeshSpec) -> WaypointPlan:
    """The objects for one waypoint Gateway, or a refusal naming the problem."""
    meta = gateway["metadata"]
    name, ns = meta["name"], meta["namespace"]
    problem = _problem(gateway)
    if problem is not None:
        reason, msg = problem
        return WaypointPlan((), Condition("Accepted", "False", reason, msg))
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    owner = {"apiVersion": gateway.get("apiVersion", "gateway.networking.k8s.io/v1"),
             "kind": "Gateway", "name": name, "uid": meta.get("uid", ""),
             "controller": True, "blockOwnerDeletion": True}
    labels = {GATEWAY_NAME_LABEL: name, GATEWAY_CLASS_LABEL: c.WAYPOINT_CLASS,
              MANAGED_LABEL: MANAGED_VALUE, c.MANAGED_BY_LABEL: c.MANAGED_BY}
    object_meta = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner]}
    selector = {GATEWAY_NAME_LABEL: name}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_meta}
    pod_labels = {**labels, "istio.io/dataplane-mode": "none", "sidecar.istio.io/inject": "false",
                  "service.istio.io/canonical-name": name,
                  "service.istio.io/canonical-revision": "latest"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": object_meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 2,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": c.WAYPOINT_UID,
                                        "runAsGroup": c.WAYPOINT_UID},
                    "containers": [{
                        "name": "istio-proxy",
                        "image": mesh.waypoint.image,
                        "imagePullPolicy": mesh.image_pull_policy,
                        "command": c.waypoint_command(gateway=name,
                                                      system_namespace=mesh.namespace,
                                                      trust_domain=mesh.trust_domain),
                        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {
                                    "fieldPath": "metadata.namespace"}}},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {
                                    "fieldPath": "metadata.name"}}},
                                {"name": "SERVICE_ACCOUNT", "value": name}],
                        "ports": [{"name": "metrics", "containerPort": c.WAYPOINT_METRICS_PORT,
                                   "protocol": "TCP"},
                                  {"name": "status-port", "containerPort": c.WAYPOINT_STATUS_PORT,
                                   "protocol": "TCP"},
                                  {"name": "hbone", "containerPort": c.WAYPOINT_HBONE_PORT,
                                   "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/healthz/ready",
                                                       "port": c.WAYPOINT_STATUS_PORT},
                                           "periodSeconds": 5, "failureThreshold": 4},
                        "securityContext": restricted_security_context(),
                        "volumeMounts": [{"name": "istio-token", "mountPath": c.TOKEN_DIR},
                                         {"name": "istio-root", "mountPath": c.ROOT_CERT_DIR,
                                          "readOnly": True}],
                        **({"resources": mesh.waypoint.resources.manifest()}
                           if mesh.waypoint.resources.manifest() else {}),
                    }],
                    "volumes": [token_volume(),
                                # Published into this namespace by rootcert.py (Istio's name).
                                {"name": "istio-root", "configMap": {
                                    "name": c.ROOT_CERT_CONFIGMAP,
                                    "items": [{"key": c.ROOT_CERT_KEY,
                                               "path": c.ROOT_CERT_KEY}]}}],
                },
            },
        },
    }
    ports = [{"name": "status-port", "port": c.WAYPOINT_STATUS_PORT, "protocol": "TCP",
              "appProtocol": "tcp"}]
    for lst in listeners:
        ports.append({"name": lst["name"], "port": lst["port"], "protocol": "TCP",
                      "appProtocol": "hbone" if lst.get("protocol") == "HBONE" else "tcp"})
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {**object_meta, "annotations": {
            "networking.istio.io/traffic-distribution": "PreferClose"}},
        "spec": {"type": "ClusterIP", "ipFamilyPolicy": "PreferDualStack",
                 "selector": selector, "ports": ports},
    }
    return WaypointPlan((sa, deployment, service),
                        Condition("Accepted", "True", "Accepted", "waypoint resources created"))


def waypoint_status(gateway: Mapping[str, Any], plan: WaypointPlan,
                    deployment: Mapping[str, Any] | None,
                    service: Mapping[str, Any] | None,
                    ) -> tuple[list[Condition], list[dict[str, Any]]]:
    """(conditions, addresses) for the Gateway, from the observed Deployment and Service."""
    name, ns = gateway["metadata"]["name"], gateway["metadata"]["namespace"]
    if plan.accepted.status != "True":
        return [plan.accepted, Condition("Programmed", "False", "Invalid",
                                         plan.accepted.message)], []
    ready = ((deployment or {}).get("status") or {}).get("readyReplicas", 0) or 0
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    if ready < 1 or not ip:
        waiting = f"waiting for Deployment {ns}/{name} to have a ready pod" if ready < 1 \
            else f"waiting for Service {ns}/{name} to get a cluster IP"
        return [plan.accepted, Condition("Programmed", "False", "Pending", waiting)], []
    addresses = [{"type": "Hostname", "value": f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"}]
    if ip != "None":
        addresses.append({"type": "IPAddress", "value": ip})
    return [plan.accepted, Condition("Programmed", "True", "Programmed",
                                     f"{ready} waypoint pod(s) ready")], addresses


def _problem(gateway: Mapping[str, Any]) -> tuple[str, str] | None:
    name = gateway["metadata"]["name"]
    if name == "none":
        return "InvalidParameters", ("the name \"none\" is reserved (istio.io/use-waypoint=none "
                                     "means no waypoint); rename the Gateway")
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    for i, lst in enumerate(listeners):
        if not isinstance(lst, Mapping) or not isinstance(lst.get("port"), int) \
                or not lst.get("name"):
            return "ListenersNotValid", f"spec.listeners[{i}] needs a name and an integer port"
    if not any(lst.get("protocol") == "HBONE" and lst.get("port") == c.WAYPOINT_HBONE_PORT
               for lst in listeners):
        return "ListenersNotValid", (f"spec.listeners needs a listener with protocol HBONE on "
                                     f"port {c.WAYPOINT_HBONE_PORT} (name \"mesh\"), as "
                                     f"`istioctl waypoint generate` writes")
    return None
