"""Unit tests of the pure next-hop choice (`build_request`) and the small pure helpers around it."""

from __future__ import annotations

import ipaddress

import pytest

from meshcore.identity import SpiffeId
from meshcore.protos.istio import workload as wl
from meshcore.wds import Snapshot, Workload
from meshcore.wds.lookup import Endpoint
from tests.ztunnel.proxy.builders import (
    service,
    service_key,
    snapshot,
    waypoint_by_host,
    waypoint_by_ip,
    workload,
)
from ztunnel.inpod.pod import PodInfo
from ztunnel.proxy.context import find_local_workload
from ztunnel.proxy.errors import (
    IllegalDestinationError,
    NoHealthyUpstreamError,
    UnsupportedDestinationError,
)
from ztunnel.proxy.inbound import forwarded_for, resolve_upstream
from ztunnel.proxy.next_hop import HboneHop, TcpHop, build_request, hostport
from ztunnel.proxy.outbound import check_outbound_destination, forwarded_header

SVC = service_key("echo")
WP = service_key("wp")


def sid(sa: str, ns: str = "shop") -> SpiffeId:
    return SpiffeId("cluster.local", ns, sa)


def first(candidates: list[Endpoint], _weights: list[int]) -> Endpoint:
    """Deterministic chooser: the first candidate in the store's order."""
    return sorted(candidates, key=lambda e: e.workload.uid)[0]


def client() -> wl.Workload:
    return workload("client", address="10.0.0.1")


def server(**fields: object) -> wl.Workload:
    return workload("server", address="10.0.0.2", services={SVC: [(80, 8080)]}, **fields)


def waypoint_pod() -> wl.Workload:
    return workload("wp-pod", address="10.0.0.9", services={WP: [(15008, 15008)]},
                    service_account="wp")


def source_of(snap: Snapshot) -> Workload:
    return snap.workloads["Kubernetes//Pod/shop/client"]


CASES = [
    pytest.param(
        [client(), server()], "10.0.0.2", 8080,
        HboneHop(("10.0.0.2", 15008), "10.0.0.2:8080", (sid("server"),), None, None),
        id="pod-ip-hbone-direct",
    ),
    pytest.param(
        [client(), server(), service("echo", subject_alt_names=["spiffe://cluster.local/ns/x/sa/y",
                                                                 "not-a-spiffe-id"])],
        "10.96.0.10", 80,
        HboneHop(("10.0.0.2", 15008), "10.0.0.2:8080", (sid("server"), sid("y", "x")), None,
                 None),
        id="service-vip-to-endpoint-target-port-with-service-sans",
    ),
    pytest.param(
        [client(), server()], "192.0.2.7", 443, TcpHop(("192.0.2.7", 443)),
        id="not-in-mesh-passthrough",
    ),
    pytest.param(
        [client(), server(tunnel_protocol=wl.TunnelProtocol.NONE)], "10.0.0.2", 8080,
        TcpHop(("10.0.0.2", 8080)), id="workload-without-hbone-plain-tcp",
    ),
    pytest.param(
        [client(), server(tunnel_protocol=wl.TunnelProtocol.NONE), service("echo")],
        "10.96.0.10", 80, TcpHop(("10.0.0.2", 8080)), id="service-endpoint-without-hbone-tcp",
    ),
    pytest.param(
        [client(), service("echo")], "10.96.0.10", 80,
        NoHealthyUpstreamError, id="service-without-endpoints-no-healthy-upstream",
    ),
    pytest.param(
        [client(), server(), service("echo")], "10.96.0.10", 81,
        NoHealthyUpstreamError, id="service-port-not-exposed",
    ),
    pytest.param(
        [client(), server(status=wl.WorkloadStatus.UNHEALTHY), service("echo")],
        "10.96.0.10", 80, NoHealthyUpstreamError, id="only-unhealthy-endpoints",
    ),
    pytest.param(
        [client(), service("echo", load_balancing=wl.LoadBalancing(
            mode=wl.LoadBalancingMode.PASSTHROUGH))],
        "10.96.0.10", 80, TcpHop(("10.96.0.10", 80)), id="passthrough-service-without-endpoints",
    ),
    pytest.param(
        [client(), server(), waypoint_pod(),
         service("wp", vip="10.96.0.99", ports=[(15008, 15008)],
                 subject_alt_names=["spiffe://cluster.local/ns/shop/sa/wp-extra"]),
         service("echo", waypoint=waypoint_by_host("wp"))],
        "10.96.0.10", 80,
        HboneHop(("10.0.0.9", 15008), "10.96.0.10:80", (sid("wp"), sid("wp-extra")), None, None,
                 via_waypoint=True),
        id="service-waypoint-by-hostname-authority-is-vip",
    ),
    pytest.param(
        [client(), server(), waypoint_pod(), service("echo", waypoint=waypoint_by_ip("10.0.0.9"))],
        "10.96.0.10", 80,
        HboneHop(("10.0.0.9", 15008), "10.96.0.10:80", (sid("wp"),), None, None,
                 via_waypoint=True),
        id="service-waypoint-by-pod-ip",
    ),
    pytest.param(
        [client(), server(), service("echo", waypoint=waypoint_by_host("wp"))],
        "10.96.0.10", 80, NoHealthyUpstreamError, id="waypoint-service-unknown",
    ),
    pytest.param(
        [client(), server(), service("wp", vip="10.96.0.99", ports=[(15008, 15008)]),
         service("echo", waypoint=waypoint_by_host("wp"))],
        "10.96.0.10", 80, NoHealthyUpstreamError, id="waypoint-without-pods",
    ),
    pytest.param(
        [client(), server(waypoint=waypoint_by_host("wp")), waypoint_pod(),
         service("wp", vip="10.96.0.99", ports=[(15008, 15008)])],
        "10.0.0.2", 8080,
        HboneHop(("10.0.0.9", 15008), "10.0.0.2:8080", (sid("wp"),), None, None,
                 via_waypoint=True),
        id="workload-waypoint-for-pod-addressed-traffic",
    ),
    pytest.param(
        [client(), server(waypoint=waypoint_by_host("wp")), waypoint_pod(), service("echo"),
         service("wp", vip="10.96.0.99", ports=[(15008, 15008)])],
        "10.96.0.10", 80,
        HboneHop(("10.0.0.2", 15008), "10.0.0.2:8080", (sid("server"),), None, None),
        id="workload-waypoint-ignored-for-service-addressed-traffic",
    ),
    pytest.param(
        [client(), server(network="other")], "10.0.0.2", 8080,
        TcpHop(("10.0.0.2", 8080)), id="pod-ip-on-other-network-is-not-ours",
    ),
    pytest.param(
        [client(), server(network="remote"), service("echo")], "10.96.0.10", 80,
        UnsupportedDestinationError, id="endpoint-on-other-network-needs-double-hbone",
    ),
    pytest.param(
        [client(), server(tunnel_protocol=wl.TunnelProtocol.LEGACY_ISTIO_MTLS)],
        "10.0.0.2", 8080, UnsupportedDestinationError, id="legacy-istio-mtls-refused",
    ),
    pytest.param(
        [client(), workload("v6", address="fd00::2")], "fd00::2", 8080,
        HboneHop(("fd00::2", 15008), "[fd00::2]:8080", (sid("v6"),), None, None),
        id="ipv6-authority-bracketed",
    ),
]


def _strip(hop: object) -> object:
    """Compare hops without the Workload/Service objects (checked separately below)."""
    if isinstance(hop, HboneHop):
        return HboneHop(hop.address, hop.authority, hop.expected, None, None, hop.via_waypoint)
    if isinstance(hop, TcpHop):
        return TcpHop(hop.address)
    return hop


@pytest.mark.parametrize(("items", "dst", "port", "want"), CASES)
def test_build_request(items: list, dst: str, port: int, want: object) -> None:
    """Each destination kind gets ztunnel's next hop, authority and expected identities."""
    snap = snapshot(*items)
    dst_ip = ipaddress.ip_address(dst)
    if isinstance(want, type):
        with pytest.raises(want) as info:
            build_request(snap, source_of(snap), dst_ip, port, choose=first)
        if want is NoHealthyUpstreamError:
            assert "no healthy upstream" in str(info.value)
        return
    assert _strip(build_request(snap, source_of(snap), dst_ip, port, choose=first)) == want


def test_service_hop_names_service_and_endpoint_workload() -> None:
    """A service-addressed hop carries the service (for metrics, forwarded host) and the pod."""
    snap = snapshot(client(), server(), service("echo"))
    hop = build_request(snap, source_of(snap), ipaddress.ip_address("10.96.0.10"), 80)
    assert isinstance(hop, HboneHop)
    assert hop.service is not None and hop.service.key == SVC
    assert hop.workload is not None and hop.workload.name == "server"


def test_waypoint_source_goes_direct() -> None:
    """The workload's own waypoint reaching it is not sent back to itself."""
    wp = workload("wp-pod", address="10.0.0.9", services={WP: [(15008, 15008)]},
                  service_account="wp")
    snap = snapshot(wp, server(waypoint=waypoint_by_host("wp")),
                    service("wp", vip="10.96.0.99", ports=[(15008, 15008)]))
    source = snap.workloads["Kubernetes//Pod/shop/wp-pod"]
    hop = build_request(snap, source, ipaddress.ip_address("10.0.0.2"), 8080)
    assert hop == HboneHop(("10.0.0.2", 15008), "10.0.0.2:8080", (sid("server"),),
                           hop.workload, None)


@pytest.mark.parametrize(("dst", "port", "ok"), [
    pytest.param("127.0.0.1", 8080, False, id="loopback"),
    pytest.param("::1", 80, False, id="loopback-v6"),
    pytest.param("10.0.0.1", 15001, False, id="own-ip-outbound-port"),
    pytest.param("10.0.0.1", 15008, False, id="own-ip-hbone-port"),
    pytest.param("10.0.0.2", 15008, True, id="other-pod-hbone-port"),
    pytest.param("10.0.0.1", 8080, True, id="own-ip-app-port"),
])
def test_check_outbound_destination(dst: str, port: int, ok: bool) -> None:
    """Loopback and self-calls on ztunnel's ports are refused; everything else passes."""
    own = (ipaddress.ip_address("10.0.0.1"),)
    illegal = frozenset({15001, 15006, 15008})
    if ok:
        check_outbound_destination(ipaddress.ip_address(dst), port, own, illegal)
    else:
        with pytest.raises(IllegalDestinationError):
            check_outbound_destination(ipaddress.ip_address(dst), port, own, illegal)


@pytest.mark.parametrize(("header", "want"), [
    pytest.param('for="10.0.0.1:41234"', "10.0.0.1", id="quoted-ip-port"),
    pytest.param('for="10.0.0.1:41234";host=echo.shop.svc.cluster.local', "10.0.0.1",
                 id="with-host"),
    pytest.param("for=10.0.0.1", "10.0.0.1", id="bare-ip"),
    pytest.param('for="[fd00::1]:443"', "fd00::1", id="v6-bracketed"),
    pytest.param('host=x;For="10.1.2.3:9"', "10.1.2.3", id="case-and-order"),
    pytest.param("for=_hidden", None, id="obfuscated"),
    pytest.param('for="127.0.0.1:80"', None, id="loopback-ignored"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="absent"),
])
def test_forwarded_for(header: str | None, want: str | None) -> None:
    """The client IP is read from the first for= of a forwarded header, or not at all."""
    got = forwarded_for(header)
    assert (str(got) if got is not None else None) == want


def test_forwarded_header_round_trips() -> None:
    """What the outbound side writes, the inbound side reads back."""
    value = forwarded_header("[fd00::5]:41000", "echo.shop.svc.cluster.local")
    assert value == 'for="[fd00::5]:41000";host=echo.shop.svc.cluster.local'
    assert str(forwarded_for(value)) == "fd00::5"
    assert hostport(ipaddress.ip_address("fd00::5"), 1) == "[fd00::5]:1"


def test_resolve_upstream_by_service_hostname() -> None:
    """A hostname authority maps service port to the pod's target port; unknown ports don't."""
    snap = snapshot(server(), service("echo"))
    local = snap.workloads["Kubernetes//Pod/shop/server"]
    got = resolve_upstream(snap, local, "echo.shop.svc.cluster.local", 80)
    assert got is not None and (str(got[0]), got[1], got[2].key) == ("10.0.0.2", 8080, SVC)
    assert resolve_upstream(snap, local, "echo.shop.svc.cluster.local", 81) is None
    assert resolve_upstream(snap, local, "other.shop.svc.cluster.local", 80) is None


def test_find_local_workload_by_pod_info() -> None:
    """The pod's Workload is found by namespace and name; a different service account is not it."""
    snap = snapshot(client(), server())
    assert find_local_workload(snap, PodInfo("u", "server", "shop", "server")).name == "server"
    assert find_local_workload(snap, PodInfo("u", "server", "shop", "other")) is None
    assert find_local_workload(snap, PodInfo("u", "server", "prod")) is None


def test_identity_users_last_release_reports_true() -> None:
    """Two pods with one identity: only the second release says the certificate may go."""
    from meshcore.identity import SpiffeId
    from ztunnel.proxy.context import IdentityUsers

    users, sid = IdentityUsers(), SpiffeId("cluster.local", "shop", "cart")
    assert users.acquire(sid) is True
    assert users.acquire(sid) is False
    assert users.release(sid) is False
    assert users.release(sid) is True
