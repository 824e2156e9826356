"""ztunnel's next-hop choice for a Service bound to a waypoint, used as-is against our waypoint:
the address, `:authority` and expected identities it computes get a tunnel the waypoint serves.
(Tests may import both packages; the product packages never import each other.)"""

from __future__ import annotations

import ipaddress
import json

import pytest

from meshcore.protos.istio import workload as wl
from meshcore.xds.types import TYPE_ADDRESS
from tests.waypoint.clients import h1_exchange
from tests.waypoint.harness import (
    CLIENT,
    NS,
    SERVICE_PORT,
    VIPS,
    WAYPOINT,
    host,
    key,
    service_proto,
    waypoint_env,
)
from ztunnel.proxy.next_hop import HboneHop, build_request

pytestmark = pytest.mark.trio


async def test_ztunnel_hop_to_the_waypoint_is_served() -> None:
    """With reviews bound to the waypoint, ztunnel's hop goes to the waypoint pod's HBONE port
    with authority = the VIP:port and expects the waypoint's identity; the request through
    that hop reaches a reviews pod."""
    async with waypoint_env() as env:
        wp_port = env.waypoint_addr[1]
        bound = service_proto("reviews", env.target_port)
        bound.waypoint = wl.GatewayAddress(
            hostname=wl.NamespacedHostname(namespace=NS, hostname=host("waypoint")),
            hbone_mtls_port=wp_port)
        waypoint_svc = wl.Service(
            name="waypoint", namespace=NS, hostname=host("waypoint"),
            addresses=[wl.NetworkAddress(address=ipaddress.ip_address("10.96.0.99").packed)],
            ports=[wl.Port(service_port=wp_port, target_port=wp_port)])
        waypoint_pod = wl.Workload(
            uid=f"Kubernetes//Pod/{NS}/waypoint-1", name="waypoint-1", namespace=NS,
            addresses=[ipaddress.ip_address("127.0.0.1").packed], service_account="waypoint",
            services={key("waypoint"): wl.PortList(ports=[
                wl.Port(service_port=wp_port, target_port=wp_port)])})
        source = wl.Workload(
            uid=f"Kubernetes//Pod/{NS}/productpage-1", name="productpage-1", namespace=NS,
            addresses=[ipaddress.ip_address("10.1.2.3").packed], service_account="productpage",
            tunnel_protocol=wl.TunnelProtocol.HBONE)
        env.apply(TYPE_ADDRESS, {key("reviews"): wl.Address(service=bound),
                                 key("waypoint"): wl.Address(service=waypoint_svc),
                                 waypoint_pod.uid: wl.Address(workload=waypoint_pod),
                                 source.uid: wl.Address(workload=source)})
        snapshot = env.store.state.wds
        hop = build_request(snapshot, snapshot.workloads[source.uid],
                            ipaddress.ip_address(VIPS["reviews"]), SERVICE_PORT)
        assert isinstance(hop, HboneHop) and hop.via_waypoint
        assert hop.address == env.waypoint_addr
        assert hop.authority == f"{VIPS['reviews']}:{SERVICE_PORT}"
        assert WAYPOINT.identity in hop.expected
        tunnel = await env.client.connect(  # type: ignore[attr-defined]
            hop.address, hop.authority, CLIENT, hop.expected)
        try:
            ((status, _, body),) = await h1_exchange(
                tunnel, [("GET", "/via-ztunnel-hop", host("reviews"), (), b"")])
        finally:
            await tunnel.aclose()
    assert status == 200
    assert json.loads(body)["pod"] in ("reviews-1", "reviews-2")
