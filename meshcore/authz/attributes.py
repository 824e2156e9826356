"""`ConnectionAttributes`: what ztunnel knows about an inbound connection when it authorizes it.

Built by ztunnel's inbound paths (HBONE: the peer certificate's identity, the TCP peer IP, the
CONNECT target; plaintext via 15006: no identity, the TCP peer IP, the original destination),
by `ambientctl why` from its arguments, and by tests. Handed to `evaluate` / `explain`.

Invariants (AMBIENT-INTERNALS §7.1; ztunnel `src/rbac.rs` `Connection`):
* `source_identity` is the peer's SPIFFE id from mTLS, or None for plaintext. It is the only
  source of the principal, namespace and service account attributes: nothing is looked up
  by IP.
* `source_ip` is the TCP peer (the client pod, or the waypoint when one is in the path).
* `destination_ip` / `destination_port` are the resolved upstream: the pod IP and the target
  (container) port, never 15008 and never a service VIP or service port.
* IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) are stored
  as IPv4, as ztunnel canonicalizes socket addresses; so a v4 CIDR matches them.
* `destination` is the destination workload; policy selection uses it (`policies_for`), the
  match predicates do not.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from meshcore.authz.errors import InvalidConnectionError
from meshcore.identity import SpiffeId
from meshcore.wds.workload import IPAddress, Workload

NO_IDENTITY = "(no peer identity)"


def _canonical(field: str, value: object) -> IPAddress:
    if isinstance(value, ipaddress.IPv6Address):
        return value.ipv4_mapped or value
    if isinstance(value, ipaddress.IPv4Address):
        return value
    raise InvalidConnectionError(
        field, f"must be an ipaddress.IPv4Address or IPv6Address, got {value!r}"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionAttributes:
    """The L4 attributes of one inbound connection, as the policies see them."""

    source_identity: SpiffeId | None
    source_ip: IPAddress
    destination_ip: IPAddress
    destination_port: int
    destination: Workload

    def __post_init__(self) -> None:
        if self.source_identity is not None and not isinstance(self.source_identity, SpiffeId):
            raise InvalidConnectionError(
                "source_identity", f"must be a SpiffeId or None, got {self.source_identity!r}"
            )
        object.__setattr__(self, "source_ip", _canonical("source_ip", self.source_ip))
        object.__setattr__(
            self, "destination_ip", _canonical("destination_ip", self.destination_ip)
        )
        port = self.destination_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise InvalidConnectionError("destination_port", f"{port!r} is not a TCP port")
        if not isinstance(self.destination, Workload):
            raise InvalidConnectionError(
                "destination", f"must be a meshcore.wds Workload, got {self.destination!r}"
            )

    @property
    def principal(self) -> str | None:
        """The peer identity without `spiffe://`, or None for plaintext."""
        return None if self.source_identity is None else self.source_identity.principal

    @property
    def source_namespace(self) -> str:
        """The namespace from the peer identity; "" without one (as ztunnel compares)."""
        return "" if self.source_identity is None else self.source_identity.namespace

    def __str__(self) -> str:
        peer = NO_IDENTITY if self.source_identity is None else str(self.source_identity)
        dst = self.destination
        return (
            f"{self.source_ip} {peer} -> {dst.namespace}/{dst.name} "
            f"{_hostport(self.destination_ip, self.destination_port)}"
        )


def _hostport(ip: IPAddress, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
