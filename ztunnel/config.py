"""ztunnel's process configuration: where istiod is, who we are, where the pods come from.

Built by `ztunnel.__main__` from flags (and the environment variables Istio's ztunnel reads,
so DaemonSet manifests carry over: NODE_NAME, CLUSTER_ID, TRUST_DOMAIN, XDS_ADDRESS,
CA_ADDRESS, INPOD_UDS). Frozen; passed to `ztunnel.app.run`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meshcore.addresses import split_host_port
from ztunnel.errors import ZtunnelConfigError


@dataclasses.dataclass(frozen=True)
class ZtunnelConfig:
    node_name: str
    xds_address: tuple[str, int]
    ca_address: tuple[str, int]
    root_cert: Path
    token_file: Path
    cluster_id: str = "Kubernetes"
    trust_domain: str = "cluster.local"
    istiod_server_name: str = "istiod.istio-system.svc"
    zds_socket: Path | None = Path("/var/run/ztunnel/ztunnel.sock")
    admin_address: tuple[str, int] = ("127.0.0.1", 15000)
    metrics_address: tuple[str, int] = ("0.0.0.0", 15020)
    readiness_address: tuple[str, int] = ("0.0.0.0", 15021)
    pod_name: str = "ztunnel"
    pod_namespace: str = "istio-system"
    instance_ip: str = "127.0.0.1"
    access_log_format: str = "text"  # or "json" (ztunnel's LOG_FORMAT)
    # On Kubernetes: annotate our own pod once the agent's pods are re-received (rollout gate).
    report_zds_sync: bool = False

    @property
    def xds_node_id(self) -> str:
        """Istio's node id format for ztunnel (AMBIENT-INTERNALS §4.1)."""
        ns = self.pod_namespace
        return f"ztunnel~{self.instance_ip}~{self.pod_name}.{ns}~{ns}.svc.cluster.local"


def parse_host_port(value: str, default_port: int, flag: str) -> tuple[str, int]:
    """`host:port`, `host` or `[v6]:port` → (host, port); a bad value names the flag."""
    try:
        return split_host_port(value, default_port)
    except ValueError as exc:
        raise ZtunnelConfigError(f"{flag}: {exc}; expected HOST:PORT") from exc
