"""Pod → workload-API `Workload`; EndpointSlice-only endpoints → opaque Workloads.

Called by translator.py, which passes the policy names already computed for each pod. Mirrors
istiod (`[is] .../ambient/workloads.go`): terminal pods and pods without an IP are not sent
(the latter with a `NoAddress` status message naming `status.podIP`); `status` is UNHEALTHY
unless Ready and not being deleted; `tunnel_protocol` is HBONE iff the node agent annotated
`ambient.istio.io/redirection: enabled` (or the pod speaks HBONE natively, label
`networking.istio.io/tunnel: http`, which also sets `native_tunnel`); `workload_type` is
always POD (istiod's backwards-compatible value); workload name from the controller owner
reference (ReplicaSet hash trimmed → Deployment, Job timestamp trimmed → CronJob), overridden
by `service.istio.io/workload-name`; canonical name/revision by label precedence.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from istiod_lite.translate.mesh import (
    MeshConfig,
    StatusMessage,
    endpoint_slice_uid,
    pod_uid,
    service_hostname,
)
from istiod_lite.translate.services import ServiceIndex, pod_services
from istiod_lite.translate.waypoints import Waypoint, bind
from meshcore.model import ClusterModel, EndpointSlice, Pod, Service, redirection_enabled
from meshcore.protos.istio.workload import (
    Locality,
    NetworkMode,
    Port,
    PortList,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    WorkloadType,
)

WORKLOAD_NAME_LABEL = "service.istio.io/workload-name"
NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")
TUNNEL_LABEL = "networking.istio.io/tunnel"
_CRONJOB_NAME = re.compile(r"^(.+)-\d{8,10}$")


def workload_name(pod: Pod) -> str:
    """The owning workload's name, by istiod's heuristics (`GetWorkloadMetaFromPod`)."""
    if WORKLOAD_NAME_LABEL in pod.labels:
        return pod.labels[WORKLOAD_NAME_LABEL]
    if not pod.meta.generate_name:
        return pod.name
    ref = next((o for o in pod.meta.owner_references if o.controller), None)
    if ref is None:
        return pod.name
    name = ref.name
    labels = pod.labels
    if ref.kind == "ReplicaSet":
        for hash_label in ("pod-template-hash", "rollouts-pod-template-hash"):
            h = labels.get(hash_label, "")
            if h and name.endswith(h):
                return name.removesuffix("-" + h)
    elif ref.kind == "ReplicationController" and labels.get("deploymentconfig"):
        return labels["deploymentconfig"]
    elif ref.kind == "Job" and (m := _CRONJOB_NAME.match(name)):
        return m.group(1)
    return name or pod.name


def canonical_name_revision(labels: Mapping[str, str], wl_name: str) -> tuple[str, str]:
    name = next((labels[k] for k in NAME_LABELS if labels.get(k)), wl_name)
    rev = next((labels[k] for k in REVISION_LABELS if labels.get(k)), "latest")
    return name, rev


def _locality(model: ClusterModel, node_name: str) -> Locality | None:
    node = model.node(node_name) if node_name else None
    if node is None:
        return None
    region = node.labels.get("topology.kubernetes.io/region", "")
    zone = node.labels.get("topology.kubernetes.io/zone", "")
    subzone = node.labels.get("topology.istio.io/subzone", "")
    if not (region or zone or subzone):
        return None
    return Locality(region=region, zone=zone, subzone=subzone)


def translate_pod(
    pod: Pod, model: ClusterModel, mesh: MeshConfig,
    waypoints: Mapping[tuple[str, str], Waypoint], policies: list[str],
    services: ServiceIndex,
) -> tuple[Workload | None, list[StatusMessage]]:
    if pod.terminal:
        return None, []
    if not pod.pod_ips:
        return None, [StatusMessage("Pod", pod.namespace, pod.name, "NoAddress",
                                    "pod has no IP yet; not sent to ztunnel until it has one",
                                    "status.podIP")]
    statuses: list[StatusMessage] = []
    wl_name = workload_name(pod)
    cname, crev = canonical_name_revision(pod.labels, wl_name)
    w = Workload(
        uid=pod_uid(mesh, pod.namespace, pod.name),
        name=pod.name,
        namespace=pod.namespace,
        addresses=[ipaddress.ip_address(ip).packed for ip in pod.pod_ips],
        network=mesh.network,
        service_account=pod.service_account,
        node=pod.node_name,
        cluster_id=mesh.cluster_id,
        trust_domain=mesh.wire_trust_domain,
        workload_name=wl_name,
        workload_type=WorkloadType.POD,
        canonical_name=cname,
        canonical_revision=crev,
        services=pod_services(pod, services),
        authorization_policies=policies,
        status=(WorkloadStatus.HEALTHY if pod.ready and not pod.meta.deletion_timestamp
                else WorkloadStatus.UNHEALTHY),
    )
    if pod.host_network:
        w.network_mode = NetworkMode.HOST_NETWORK
    locality = _locality(model, pod.node_name)
    if locality is not None:
        w.locality = locality
    if redirection_enabled(pod):
        w.tunnel_protocol = TunnelProtocol.HBONE
    if pod.labels.get(TUNNEL_LABEL) == "http":
        w.tunnel_protocol = TunnelProtocol.HBONE
        w.native_tunnel = True
    wp, status = bind("Pod", pod.meta, "workload", model, waypoints)  # None for waypoints
    if wp is not None:
        w.waypoint = wp.address(mesh)
    if status is not None:
        statuses.append(status)
    return w, statuses


def translate_endpoint_slice(es: EndpointSlice, model: ClusterModel,
                             mesh: MeshConfig) -> list[Workload]:
    """Workloads for endpoints of selector-less Services that are not pods (istiod's
    EndpointSlice workloads: no identity, HOST_NETWORK mode so they are not looked up by IP)."""
    if es.address_type == "FQDN" or not es.service_name:
        return []
    svc = model.get("Service", es.namespace, es.service_name)
    if not isinstance(svc, Service) or svc.selector or svc.type == "ExternalName":
        return []
    ports = []
    for sp in svc.ports:
        for ep_port in es.ports:
            if ep_port.name == sp.name and ep_port.port is not None:
                ports.append(Port(service_port=sp.port, target_port=ep_port.port))
                break
    key = f"{svc.namespace}/{service_hostname(mesh, svc.namespace, svc.name)}"
    out, seen = [], set()
    for ep in es.endpoints:
        if (ep.target_ref and ep.target_ref.kind == "Pod") or not ep.addresses:
            continue
        first = ep.addresses[0]
        if first in seen:
            continue
        seen.add(first)
        out.append(Workload(
            uid=endpoint_slice_uid(mesh, es.namespace, es.name, first),
            name=es.name, namespace=es.namespace,
            addresses=[ipaddress.ip_address(a).packed for a in ep.addresses],
            network=mesh.network, trust_domain=mesh.wire_trust_domain,
            services={key: PortList(ports=list(ports))},
            status=WorkloadStatus.HEALTHY if ep.ready in (None, True)
            else WorkloadStatus.UNHEALTHY,
            cluster_id=mesh.cluster_id, network_mode=NetworkMode.HOST_NETWORK))
    return out
