"""Waypoint discovery and binding (AMBIENT-INTERNALS §6.1-6.2), as pure functions.

`find_waypoints(model, mesh)` lists Gateways of class `istio-waypoint` with the address ztunnel
should use. `bind(...)` resolves `istio.io/use-waypoint` (+ `-namespace`) on an object, falling
back to its namespace's labels; `none` opts out; the object's label beats the namespace's; the
waypoint must accept the traffic type (`istio.io/waypoint-for`: service / workload / all).
Waypoints themselves (label `gateway.istio.io/managed=istio.io-mesh-controller`) never get one.
Called by services.py and workloads.py. Address choice: a Hostname from `status.addresses`,
else an IP from it, else `<gw>.<ns>.svc.<domain>` (the Service our deployer creates for the
waypoint; folder-based setups have no controller writing status). hbone_mtls_port is 15008.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping

from istiod_lite.translate.mesh import HBONE_PORT, MeshConfig, StatusMessage, service_hostname
from meshcore.model import ClusterModel, Gateway, ObjectMeta
from meshcore.protos.istio.workload import GatewayAddress, NamespacedHostname, NetworkAddress

USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace"
MANAGED_LABEL = "gateway.istio.io/managed"
MESH_CONTROLLER = "istio.io-mesh-controller"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


@dataclasses.dataclass(frozen=True, slots=True)
class Waypoint:
    namespace: str
    name: str
    traffic_type: str  # service | workload | all | none
    hostname: str = ""
    ip: str = ""

    def accepts(self, want: str) -> bool:
        return self.traffic_type in (want, "all")

    def address(self, mesh: MeshConfig) -> GatewayAddress:
        if self.hostname:
            return GatewayAddress(
                hostname=NamespacedHostname(namespace=self.namespace, hostname=self.hostname),
                hbone_mtls_port=HBONE_PORT)
        return GatewayAddress(
            address=NetworkAddress(network=mesh.network,
                                   address=ipaddress.ip_address(self.ip).packed),
            hbone_mtls_port=HBONE_PORT)


def find_waypoints(model: ClusterModel, mesh: MeshConfig) -> dict[tuple[str, str], Waypoint]:
    out = {}
    for gw in model.sorted("Gateway"):
        assert isinstance(gw, Gateway)
        if not gw.is_waypoint:
            continue
        hostname = next((v for t, v in gw.status_addresses if t == "Hostname"), "")
        ip = next((v for t, v in gw.status_addresses if t == "IPAddress"), "")
        if not hostname and not ip:
            hostname = service_hostname(mesh, gw.namespace, gw.name)
        out[gw.key] = Waypoint(gw.namespace, gw.name, gw.waypoint_for, hostname, ip)
    return out


def is_waypoint_instance(meta: ObjectMeta) -> bool:
    return meta.labels.get(MANAGED_LABEL) == MESH_CONTROLLER


def _requested(labels: Mapping[str, str], default_ns: str) -> tuple[str, str] | str | None:
    """(ns, name) requested by labels, "none" for an explicit opt-out, None if unlabelled."""
    name = labels.get(USE_WAYPOINT_LABEL)
    if name is None or name == "":
        return None
    if name == "none":
        return "none"
    return (labels.get(USE_WAYPOINT_NAMESPACE_LABEL) or default_ns, name)


def bind(
    kind: str,
    meta: ObjectMeta,
    want: str,
    model: ClusterModel,
    waypoints: Mapping[tuple[str, str], Waypoint],
) -> tuple[Waypoint | None, StatusMessage | None]:
    """The waypoint for an object (`want` = "service" or "workload"), plus a status message
    when a label names a waypoint that is missing or does not take this traffic type."""
    if is_waypoint_instance(meta):
        return None, None
    req = _requested(meta.labels, meta.namespace)
    source = "object"
    if req is None:
        req = _requested(model.namespace_labels(meta.namespace), meta.namespace)
        source = "namespace"
    if req is None or req == "none":
        return None, None
    assert isinstance(req, tuple)
    field = (f'metadata.labels["{USE_WAYPOINT_LABEL}"]' if source == "object"
             else f'Namespace {meta.namespace} label "{USE_WAYPOINT_LABEL}"')
    wp = waypoints.get(req)
    if wp is None:
        return None, StatusMessage(kind, meta.namespace, meta.name, "NotFound",
                                   f"waypoint {req[0]}/{req[1]} not found "
                                   "(no Gateway of class istio-waypoint with that name)", field)
    if not wp.accepts(want):
        if source == "namespace":
            return None, None  # a namespace-wide label silently skips the other traffic type
        return None, StatusMessage(kind, meta.namespace, meta.name, "UnsupportedValue",
                                   f"waypoint {wp.namespace}/{wp.name} is for "
                                   f"{wp.traffic_type} traffic, not {want} traffic", field)
    return wp, None
