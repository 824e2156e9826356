"""Kubernetes Service → workload-API `Service`, and the per-pod `services` map.

Called by translator.py. Mirrors istiod (`[is] .../ambient/services.go`, `workloads.go`):
ExternalName services are not sent; VIPs are the cluster IPs; `Port.target_port` is the
numeric targetPort or 0 when it is a container-port name (resolved per pod in
`pod_services`, where a pod lacking that named port drops the port); the app protocol comes
from appProtocol or the port-name prefix; load balancing from internalTrafficPolicy /
trafficDistribution (or the `networking.istio.io/traffic-distribution` annotation on the
Service or its namespace); Kubernetes Services are always `canonical`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping

from istiod_lite.translate.mesh import MeshConfig, StatusMessage, service_hostname
from istiod_lite.translate.waypoints import Waypoint, bind
from meshcore.model import ClusterModel, EndpointSlice, Pod, Service, ServicePort, selects
from meshcore.protos.istio.workload import (
    AppProtocol,
    IpFamilies,
    LoadBalancing,
    LoadBalancingHealthPolicy,
    LoadBalancingMode,
    LoadBalancingScope,
    NetworkAddress,
    Port,
    PortList,
)
from meshcore.protos.istio.workload import Service as ServiceProto

TRAFFIC_DISTRIBUTION_ANNOTATION = "networking.istio.io/traffic-distribution"
INGRESS_USE_WAYPOINT_LABEL = "istio.io/ingress-use-waypoint"

_PROTOCOLS = {
    "http": AppProtocol.HTTP11, "http2": AppProtocol.HTTP2, "grpc": AppProtocol.GRPC,
    "tcp": AppProtocol.TCP, "tls": AppProtocol.TLS, "https": AppProtocol.TLS,
    "kubernetes.io/h2c": AppProtocol.HTTP2, "kubernetes.io/ws": AppProtocol.HTTP11,
    "kubernetes.io/wss": AppProtocol.TLS,
}


def app_protocol(port: ServicePort) -> AppProtocol:
    """Istio's protocol sniffing from appProtocol or the port-name prefix (`http-web`)."""
    if port.protocol != "TCP":
        return AppProtocol.UNKNOWN
    name = (port.app_protocol if port.app_protocol is not None else port.name).lower()
    if name in _PROTOCOLS:
        return _PROTOCOLS[name]
    if name.startswith("grpc-web"):
        return AppProtocol.UNKNOWN
    return _PROTOCOLS.get(name.split("-", 1)[0], AppProtocol.UNKNOWN)


def _zone_lb() -> LoadBalancing:
    return LoadBalancing(routing_preference=[LoadBalancingScope.NETWORK, LoadBalancingScope.REGION,
                                             LoadBalancingScope.ZONE],
                         mode=LoadBalancingMode.FAILOVER)


def _node_lb() -> LoadBalancing:
    return LoadBalancing(routing_preference=[LoadBalancingScope.NETWORK, LoadBalancingScope.REGION,
                                             LoadBalancingScope.ZONE, LoadBalancingScope.SUBZONE,
                                             LoadBalancingScope.NODE],
                         mode=LoadBalancingMode.FAILOVER)


def _load_balancing(svc: Service, ns_annotations: Mapping[str, str]) -> LoadBalancing | None:
    lb = None
    if svc.internal_traffic_policy == "Local":
        lb = LoadBalancing(routing_preference=[LoadBalancingScope.NODE],
                           mode=LoadBalancingMode.STRICT)
    else:
        dist = (svc.traffic_distribution or svc.annotations.get(TRAFFIC_DISTRIBUTION_ANNOTATION)
                or ns_annotations.get(TRAFFIC_DISTRIBUTION_ANNOTATION, ""))
        if dist in ("PreferClose", "PreferSameZone"):
            lb = _zone_lb()
        elif dist == "PreferSameNode":
            lb = _node_lb()
    if svc.publish_not_ready_addresses:
        lb = lb or LoadBalancing()
        lb.health_policy = LoadBalancingHealthPolicy.ALLOW_ALL
    return lb


def translate_service(
    svc: Service, model: ClusterModel, mesh: MeshConfig,
    waypoints: Mapping[tuple[str, str], Waypoint],
) -> tuple[ServiceProto | None, list[StatusMessage]]:
    """The workload-API Service (None for ExternalName) and any status messages."""
    if svc.type == "ExternalName":
        return None, []
    wp, status = bind("Service", svc.meta, "service", model, waypoints)
    out = ServiceProto(
        name=svc.name, namespace=svc.namespace,
        hostname=service_hostname(mesh, svc.namespace, svc.name),
        addresses=[NetworkAddress(network=mesh.network, address=ipaddress.ip_address(ip).packed)
                   for ip in svc.cluster_ips],
        ports=[Port(service_port=p.port,
                    target_port=p.target_port if isinstance(p.target_port, int) else 0,
                    app_protocol=app_protocol(p)) for p in svc.ports],
        canonical=True,
    )
    ns = model.namespace(svc.namespace)
    lb = _load_balancing(svc, ns.annotations if ns else {})
    if lb is not None:
        out.load_balancing = lb
    if len(svc.ip_families) == 2:
        out.ip_families = IpFamilies.DUAL
    elif svc.ip_families:
        out.ip_families = (IpFamilies.IPV4_ONLY if svc.ip_families[0] == "IPv4"
                           else IpFamilies.IPV6_ONLY)
    if wp is not None:
        out.waypoint = wp.address(mesh)
        flag = svc.labels.get(INGRESS_USE_WAYPOINT_LABEL)
        if flag is None and ns is not None:
            flag = ns.labels.get(INGRESS_USE_WAYPOINT_LABEL)
        out.ingress_use_waypoint = (flag or "").lower() == "true"
    return out, [status] if status else []


def _port_list(svc: Service, pod: Pod) -> PortList:
    ports = []
    for p in svc.ports:
        if isinstance(p.target_port, str):
            target = pod.find_port(p.target_port)
            if target is None:
                continue  # this pod does not expose the named port: leave it out
        else:
            target = p.target_port
        ports.append(Port(service_port=p.port, target_port=target))
    return PortList(ports=ports)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceIndex:
    """Which Services can back which pods, computed once per translation."""

    selecting: Mapping[str, list[tuple[str, Service]]]  # namespace → [(key, Service)]
    by_endpoint_pod: Mapping[tuple[str, str], list[tuple[str, Service]]]  # (ns, pod name)


def build_service_index(model: ClusterModel, mesh: MeshConfig) -> ServiceIndex:
    """Index Services with selectors by namespace, and selector-less Services by the pods
    their EndpointSlices point at (targetRef kind Pod)."""
    selecting: dict[str, list[tuple[str, Service]]] = {}
    for svc in model.services:
        if svc.type != "ExternalName" and svc.selector:
            key = f"{svc.namespace}/{service_hostname(mesh, svc.namespace, svc.name)}"
            selecting.setdefault(svc.namespace, []).append((key, svc))
    by_pod: dict[tuple[str, str], list[tuple[str, Service]]] = {}
    for es in model.sorted("EndpointSlice"):
        assert isinstance(es, EndpointSlice)
        if not es.service_name or es.address_type == "FQDN":
            continue
        target = model.get("Service", es.namespace, es.service_name)
        if not isinstance(target, Service) or target.selector or target.type == "ExternalName":
            continue
        key = f"{target.namespace}/{service_hostname(mesh, target.namespace, target.name)}"
        for ep in es.endpoints:
            ref = ep.target_ref
            if ref and ref.kind == "Pod" and (ref.namespace or es.namespace) == es.namespace:
                entries = by_pod.setdefault((es.namespace, ref.name), [])
                if (key, target) not in entries:
                    entries.append((key, target))
    return ServiceIndex(selecting, by_pod)


def pod_services(pod: Pod, index: ServiceIndex) -> dict[str, PortList]:
    """`Workload.services` for a pod: Services selecting it, plus selector-less Services
    whose EndpointSlices point at it."""
    out: dict[str, PortList] = {}
    for key, svc in index.selecting.get(pod.namespace, ()):
        if selects(svc.selector, pod.labels):
            out[key] = _port_list(svc, pod)
    for key, svc in index.by_endpoint_pod.get((pod.namespace, pod.name), ()):
        out.setdefault(key, _port_list(svc, pod))
    return out
