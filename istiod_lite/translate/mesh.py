"""Mesh-wide settings the translation needs, resource naming, and the status message type.

Used by every module of istiod_lite.translate. Names follow istiod (AMBIENT-INTERNALS §4.1):
workload uid `<clusterID>//Pod/<ns>/<name>`, service `<ns>/<hostname>`, authorization
`<ns>/<name>`; hostnames `<svc>.<ns>.svc.<cluster domain>`.
"""

from __future__ import annotations

import dataclasses

ADDRESS_TYPE_URL = "type.googleapis.com/istio.workload.Address"
AUTHORIZATION_TYPE_URL = "type.googleapis.com/istio.security.Authorization"
HBONE_PORT = 15008


@dataclasses.dataclass(frozen=True, slots=True)
class MeshConfig:
    trust_domain: str = "cluster.local"
    root_namespace: str = "istio-system"
    cluster_id: str = "Kubernetes"
    cluster_domain: str = "cluster.local"
    network: str = ""
    enable_dry_run: bool = False  # istiod feature EnableWdsDryRunAuthzPol

    @property
    def wire_trust_domain(self) -> str:
        """What Workload.trust_domain carries: "" for the default cluster.local, as istiod
        elides it (ztunnel fills the default back in)."""
        return "" if self.trust_domain == "cluster.local" else self.trust_domain


@dataclasses.dataclass(frozen=True, slots=True)
class StatusMessage:
    """A note about one source object, for logs and its status condition (Istio's reasons:
    `UnsupportedValue`, `NotFound`, `NoAddress`, ...)."""

    kind: str
    namespace: str
    name: str
    reason: str
    message: str
    field: str = ""

    def __str__(self) -> str:
        ref = f"{self.namespace}/{self.name}" if self.namespace else self.name
        where = f"{self.field}: " if self.field else ""
        return f"{self.kind} {ref}: {where}{self.message} ({self.reason})"


def pod_uid(mesh: MeshConfig, namespace: str, name: str) -> str:
    return f"{mesh.cluster_id}//Pod/{namespace}/{name}"


def endpoint_slice_uid(mesh: MeshConfig, namespace: str, name: str, address: str) -> str:
    return f"{mesh.cluster_id}/discovery.k8s.io/EndpointSlice/{namespace}/{name}/{address}"


def service_hostname(mesh: MeshConfig, namespace: str, name: str) -> str:
    return f"{name}.{namespace}.svc.{mesh.cluster_domain}"


def service_resource_name(namespace: str, hostname: str) -> str:
    return f"{namespace}/{hostname}"


def authorization_resource_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"
