"""Names shared by the Delta xDS server (istiod_lite) and its clients (ztunnel, waypoint).

Type URLs are Istio's (AMBIENT-INTERNALS §4.1); node ids follow Istio's
`<role>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>` shape. Pure data, no I/O.
"""

from __future__ import annotations

import dataclasses

TYPE_PREFIX = "type.googleapis.com/"
TYPE_ADDRESS = "type.googleapis.com/istio.workload.Address"
TYPE_AUTHORIZATION = "type.googleapis.com/istio.security.Authorization"
TYPE_WORKLOAD = "type.googleapis.com/istio.workload.Workload"
ZTUNNEL_TYPES = (TYPE_ADDRESS, TYPE_AUTHORIZATION)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
DELTA_METHOD = f"/{ADS_SERVICE}/DeltaAggregatedResources"
SOTW_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeId:
    """An xDS node id: `<role>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`.

    `role` is "ztunnel" or "waypoint" (Istio uses "sidecar" for both non-ztunnel proxies;
    we keep the more telling name). `parse` accepts any id and leaves unknown parts empty,
    so a foreign client is still recorded, just less precisely.
    """

    role: str
    ip: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    dns_domain: str = "cluster.local"

    def __str__(self) -> str:
        return (
            f"{self.role}~{self.ip}~{self.pod_name}.{self.pod_namespace}"
            f"~{self.pod_namespace}.svc.{self.dns_domain}"
        )

    @classmethod
    def parse(cls, node_id: str) -> NodeId:
        parts = node_id.split("~")
        if len(parts) != 4:
            return cls(role=parts[0] if parts else "")
        role, ip, pod, suffix = parts
        name, _, namespace = pod.partition(".")
        domain = suffix.split(".svc.", 1)[1] if ".svc." in suffix else ""
        return cls(role, ip, name, namespace, domain)
