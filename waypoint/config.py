"""The waypoint process's configuration: where istiod is, which Gateway we are, who we are.

Built by `waypoint.__main__` from flags (defaults from the environment variables Istio's
waypoint pods carry: POD_NAME, POD_NAMESPACE, INSTANCE_IP, ISTIO_META_CLUSTER_ID, CA_ADDR,
XDS_ADDRESS, SERVICE_ACCOUNT); frozen; passed to `waypoint.app.run`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meshcore.addresses import split_host_port
from meshcore.identity import InvalidIdentityError, SpiffeId
from meshcore.xds.types import NodeId
from waypoint.errors import WaypointConfigError
from waypoint.http import Limits

Address = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class WaypointConfig:
    name: str  # the waypoint Gateway's name
    namespace: str
    identity: SpiffeId
    xds_address: Address
    ca_address: Address
    root_cert: Path
    token_file: Path
    listen: Address = ("0.0.0.0", 15008)
    admin_address: Address = ("127.0.0.1", 15000)
    metrics_address: Address = ("0.0.0.0", 15020)
    readiness_address: Address = ("0.0.0.0", 15021)
    cluster_id: str = "Kubernetes"
    istiod_server_name: str = "istiod.istio-system.svc"
    pod_name: str = "waypoint"
    instance_ip: str = "127.0.0.1"
    upstream_hbone_port: int = 15008
    access_log_format: str = "text"
    limits: Limits = dataclasses.field(default_factory=Limits)

    @property
    def gateway(self) -> str:
        """`ns/name`: how routes and policies name this waypoint."""
        return f"{self.namespace}/{self.name}"

    @property
    def xds_node_id(self) -> str:
        return str(NodeId("waypoint", self.instance_ip, self.pod_name, self.namespace))


def parse_identity(value: str, trust_domain: str = "cluster.local") -> SpiffeId:
    """`spiffe://td/ns/<ns>/sa/<sa>` or `<ns>/<sa>` → SpiffeId."""
    try:
        if value.startswith("spiffe://"):
            return SpiffeId.parse(value)
        ns, sep, sa = value.partition("/")
        if not sep or not ns or not sa or "/" in sa:
            raise InvalidIdentityError(f"{value!r} is neither a spiffe:// URI nor <ns>/<sa>")
        return SpiffeId(trust_domain, ns, sa)
    except InvalidIdentityError as exc:
        raise WaypointConfigError(f"--identity: {exc}") from exc


def parse_host_port(value: str, default_port: int, flag: str) -> Address:
    """`host:port`, `host` or `[v6]:port` → (host, port); a bad value names the flag."""
    try:
        return split_host_port(value, default_port)
    except ValueError as exc:
        raise WaypointConfigError(f"{flag}: {exc}; expected HOST:PORT") from exc
