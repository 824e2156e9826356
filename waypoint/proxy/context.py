"""What the waypoint knows about one HBONE tunnel, for every request inside it. Pure data.

Built by `waypoint.proxy.listener` from the CONNECT request (peer identity from mTLS, the
`forwarded` / `baggage` / `traceparent` headers ztunnel sends) and the destination it resolved
(a Service by VIP, or a Workload by pod IP); read by `downstream` and `handler`.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from meshcore.identity import SpiffeId
from meshcore.telemetry import PeerMetadata, parse_baggage
from meshcore.wds import Service, Workload

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclasses.dataclass(frozen=True, slots=True)
class TunnelContext:
    authority: str  # the CONNECT :authority, the original destination
    dest_ip: IPAddress
    port: int  # the service port (or the pod port for workload-addressed traffic)
    peer_identity: SpiffeId
    peer_addr: str  # "ip:port" of the HBONE peer (the source's ztunnel)
    service: Service | None = None
    workload: Workload | None = None  # for workload-addressed traffic
    source_ip: IPAddress | None = None  # from `forwarded: for=`
    source_addr: str = ""
    peer: PeerMetadata | None = None  # from `baggage`

    @property
    def hostname(self) -> str:
        return self.service.hostname if self.service is not None else ""


def parse_forwarded_for(value: str | None) -> tuple[IPAddress | None, str]:
    """`for="10.0.0.5:41234";host=...` → (10.0.0.5, "10.0.0.5:41234"); (None, "") if absent."""
    if not value:
        return None, ""
    for part in value.split(","):
        for pair in part.split(";"):
            k, _, v = pair.strip().partition("=")
            if k.strip().lower() != "for":
                continue
            addr = v.strip().strip('"')
            host = addr
            if addr.startswith("["):
                host = addr[1:].split("]", 1)[0]
            elif addr.count(":") == 1:
                host = addr.split(":", 1)[0]
            try:
                return ipaddress.ip_address(host), addr
            except ValueError:
                return None, addr
    return None, ""


def peer_metadata(value: str | None) -> PeerMetadata | None:
    return parse_baggage(value) if value else None
