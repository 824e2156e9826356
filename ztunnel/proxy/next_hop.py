"""Where an outbound connection goes: ztunnel's `build_request`, as a pure function.

Who calls it: `ztunnel.proxy.outbound` once per connection captured on 15001, with the current
`meshcore.wds` Snapshot, the source workload (the pod this proxy serves) and the original
destination. It hands back a `HboneHop` (tunnel through the pool) or a `TcpHop` (plain TCP
passthrough), or raises a `ProxyError` subclass (the handler logs it and closes the app's
connection). No I/O; endpoint choice is injectable (`choose`) so tests are deterministic.

Steps (AMBIENT-INTERNALS §2.6, ztunnel `src/proxy/outbound.rs`):
1. The dialed IP as a service VIP (on the source's network, preferring the source's
   namespace). A service with a waypoint → HBONE to a waypoint pod on its `hbone_mtls_port`,
   `:authority` = the original destination, expected = waypoint pod identity + the waypoint
   service's SANs.
2. Otherwise the upstream: a service's endpoint (load balanced) or the workload owning the IP.
   A service with no usable endpoint → `NoHealthyUpstreamError` ("no healthy upstream"),
   unless its load balancing mode is PASSTHROUGH (then plain TCP to the dialed address).
   An IP the mesh does not know → plain TCP passthrough.
3. An upstream on another network needs double HBONE: not supported (error).
4. Workload-addressed (not via a service) upstream with its own waypoint, and the source is not
   that waypoint → HBONE to the workload's waypoint, `:authority` = the original destination.
5. Direct: `tunnel_protocol` HBONE → `<pod IP>:15008`, `:authority` = `<pod IP>:<target port>`,
   expected = the pod's identity (+ the service's SANs); NONE → plain TCP to `<pod IP>:<target
   port>`; LEGACY_ISTIO_MTLS → error (ztunnel cannot send it).
Invariants: an HboneHop's `expected` is never empty and sorted; IPv6 hosts are bracketed in
authorities; the function never looks at anything but its arguments.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from meshcore.identity import InvalidIdentityError, SpiffeId
from meshcore.wds import (
    GatewayAddress,
    IPAddress,
    NamespacedHostname,
    NetworkAddress,
    Service,
    ServiceDestination,
    Snapshot,
    TunnelProtocol,
    Workload,
    find_destination,
    select_endpoint,
)
from meshcore.wds.lookup import Chooser, Endpoint, random_choice
from meshcore.wds.workload import HBONE_PORT, LoadBalancingMode
from ztunnel.proxy.errors import NoHealthyUpstreamError, UnsupportedDestinationError

Address = tuple[str, int]


def hostport(ip: IPAddress | str, port: int) -> str:
    """`ip:port`, with IPv6 literals bracketed (`[fd00::1]:8080`): an HBONE authority."""
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


@dataclasses.dataclass(frozen=True, slots=True)
class HboneHop:
    """Tunnel to `address` (a ztunnel's or waypoint's 15008) with CONNECT `authority`."""

    address: Address
    authority: str
    expected: tuple[SpiffeId, ...]
    workload: Workload | None  # the destination pod (or the waypoint pod, when via_waypoint)
    service: Service | None  # the service the app dialed, if it dialed a VIP
    via_waypoint: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TcpHop:
    """Plain TCP to `address`: a destination outside the mesh, or a workload without HBONE."""

    address: Address
    workload: Workload | None = None
    service: Service | None = None


NextHop = HboneHop | TcpHop


def build_request(
    snapshot: Snapshot,
    source: Workload,
    dst_ip: IPAddress,
    dst_port: int,
    *,
    choose: Chooser = random_choice,
) -> NextHop:
    """Choose the next hop for `source` dialing `dst_ip:dst_port` (see the module docstring)."""
    original = hostport(dst_ip, dst_port)
    dest = find_destination(
        snapshot, dst_ip, dst_port, network=source.network, source_namespace=source.namespace
    )
    if dest is None:
        return TcpHop((str(dst_ip), dst_port))
    if isinstance(dest, ServiceDestination):
        service = dest.service
        if service.waypoint is not None:
            return _to_waypoint(snapshot, source, service.waypoint, original, service, choose)
        endpoint = select_endpoint(
            snapshot, service, dst_port, source=source, dialed_ip=dst_ip, choose=choose
        )
        if endpoint is None:
            lb = service.load_balancing
            if lb is not None and lb.mode is LoadBalancingMode.PASSTHROUGH:
                return TcpHop((str(dst_ip), dst_port), service=service)
            raise NoHealthyUpstreamError(
                f"no healthy upstream: service {service.key} ({original}) has no ready endpoint"
                f" for port {dst_port}; are its pods running and is the port in the Service?"
            )
    else:
        service = None
        endpoint = Endpoint(dest.workload, dest.ip, dst_port)
    upstream = endpoint.workload
    if upstream.network != source.network:
        raise UnsupportedDestinationError(
            f"{original} resolves to {upstream.namespace}/{upstream.name} on network"
            f" {upstream.network!r} (source network {source.network!r}): double HBONE through an"
            " east-west gateway is not supported"
        )
    if service is None and upstream.waypoint is not None:
        try:
            hop = _to_waypoint(snapshot, source, upstream.waypoint, original, None, choose)
        except _SourceIsWaypoint:
            pass
        else:
            return hop
    return _direct(upstream, endpoint.ip, endpoint.port, service)


def _direct(workload: Workload, ip: IPAddress, port: int, service: Service | None) -> NextHop:
    protocol = workload.tunnel_protocol
    if protocol is TunnelProtocol.HBONE:
        expected = {workload.identity, *(_sans(service) if service is not None else ())}
        return HboneHop(
            (str(ip), HBONE_PORT), hostport(ip, port), tuple(sorted(expected)), workload, service
        )
    if protocol is TunnelProtocol.NONE:
        return TcpHop((str(ip), port), workload, service)
    raise UnsupportedDestinationError(
        f"{workload.namespace}/{workload.name} uses tunnel protocol {protocol.name}, which"
        " ztunnel cannot originate"
    )


class _SourceIsWaypoint(Exception):
    """Internal: the source pod is the destination's workload waypoint (go direct)."""


def _to_waypoint(
    snapshot: Snapshot,
    source: Workload,
    gateway: GatewayAddress,
    original: str,
    service: Service | None,
    choose: Chooser,
) -> HboneHop:
    dest = gateway.destination
    port = gateway.hbone_mtls_port or HBONE_PORT
    wp_service: Service | None = None
    endpoint: Endpoint | None = None
    if isinstance(dest, NamespacedHostname):
        wp_service = snapshot.services.get(dest.key)
        if wp_service is None:
            raise NoHealthyUpstreamError(
                f"no healthy upstream: waypoint service {dest.key} for {original} is unknown;"
                " is the waypoint Gateway deployed?"
            )
        endpoint = _waypoint_endpoint(snapshot, wp_service, port, source, choose)
    else:
        assert isinstance(dest, NetworkAddress)
        vip_services = snapshot.services_by_vip.get((dest.network, dest.address))
        if vip_services:
            wp_service = vip_services[0]
            endpoint = _waypoint_endpoint(snapshot, wp_service, port, source, choose)
        else:
            workload = snapshot.workloads_by_address.get((dest.network, dest.address))
            if workload is not None:
                endpoint = Endpoint(workload, dest.address, port)
    if endpoint is None:
        raise NoHealthyUpstreamError(
            f"no healthy upstream: the waypoint for {original} ({_describe(dest)}) has no ready"
            " pod"
        )
    waypoint = endpoint.workload
    if waypoint.uid == source.uid:
        raise _SourceIsWaypoint()
    expected = {waypoint.identity, *(_sans(wp_service) if wp_service is not None else ())}
    return HboneHop(
        (str(endpoint.ip), port), original, tuple(sorted(expected)), waypoint, service,
        via_waypoint=True,
    )


def _waypoint_endpoint(
    snapshot: Snapshot, wp_service: Service, port: int, source: Workload, choose: Chooser
) -> Endpoint | None:
    found = select_endpoint(snapshot, wp_service, port, source=source, choose=choose)
    if found is not None:
        return Endpoint(found.workload, found.ip, port)
    return None


def _sans(service: Service) -> list[SpiffeId]:
    out = []
    for san in service.subject_alt_names:
        try:
            out.append(SpiffeId.parse(san))
        except InvalidIdentityError:
            continue  # a non-SPIFFE SAN can never match a workload certificate
    return out


def _describe(dest: NamespacedHostname | NetworkAddress) -> str:
    if isinstance(dest, NamespacedHostname):
        return dest.key
    return str(ipaddress.ip_address(dest.address))
