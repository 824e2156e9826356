"""The from_proto gates: good workload-API protos become frozen types, bad ones raise by name."""

from __future__ import annotations

import ipaddress

import pytest

from meshcore.identity import SpiffeId
from meshcore.protos.istio import security as sec
from meshcore.protos.istio import workload as wl
from meshcore.wds import (
    Action,
    Authorization,
    ConversionError,
    GatewayAddress,
    NamespacedHostname,
    NetworkAddress,
    Scope,
    Service,
    StringMatch,
    StringMatchKind,
    TunnelProtocol,
    Workload,
)
from meshcore.wds.workload import address_from_proto
from meshcore.xds.errors import ResourceRejected
from tests.meshcore.wds.factories import ip, policy, service, service_key, workload


def test_workload_round_trip_through_the_wire() -> None:
    """A serialized pod workload converts to a frozen Workload with typed fields."""
    msg = workload(
        "web-1",
        address="10.0.0.7",
        services={service_key("web"): [(80, 8080)]},
        policies=("shop/allow-web",),
        waypoint=wl.GatewayAddress(hostname=wl.NamespacedHostname("shop", "wp.shop.svc"),
                                   hbone_mtls_port=15008),
        locality=wl.Locality(region="r1", zone="z1"),
        capacity=3,
    )
    got = Workload.from_proto(wl.Workload().parse(bytes(msg)))
    assert got.uid == "Kubernetes//Pod/shop/web-1"
    assert got.addresses == (ipaddress.IPv4Address("10.0.0.7"),)
    assert got.identity == SpiffeId("cluster.local", "shop", "web-1")
    assert got.tunnel_protocol is TunnelProtocol.HBONE
    assert got.waypoint == GatewayAddress(NamespacedHostname("shop", "wp.shop.svc"), 15008)
    assert got.ports_for(service_key("web"))[0].target_port == 8080
    assert got.authorization_policies == ("shop/allow-web",)
    assert got.locality.zone == "z1"
    assert got.capacity == 3
    assert hash(got)  # frozen and hashable


def test_defaults_identity_port_and_capacity() -> None:
    """Empty trust domain / service account / waypoint port / capacity take Istio's defaults."""
    msg = wl.Workload(uid="u", name="p", namespace="ns", addresses=[ip("fd00::1")],
                      waypoint=wl.GatewayAddress(address=wl.NetworkAddress(address=ip("10.1.1.1"))))
    got = Workload.from_proto(wl.Workload().parse(bytes(msg)))
    assert got.identity.uri == "spiffe://cluster.local/ns/ns/sa/default"
    assert got.addresses == (ipaddress.IPv6Address("fd00::1"),)
    assert got.waypoint == GatewayAddress(NetworkAddress("", ipaddress.IPv4Address("10.1.1.1")))
    assert got.waypoint.hbone_mtls_port == 15008
    assert got.capacity == 1
    assert got.waypoint is not None and got.network_gateway is None


def test_service_conversion() -> None:
    """A Service keeps VIPs as IP objects, ports, SANs and its `ns/hostname` key."""
    msg = service("web", vip="10.96.0.10", ports=[(80, 8080), (443, 0)], subject_alt_names=["x"])
    got = Service.from_proto(wl.Service().parse(bytes(msg)))
    assert got.key == service_key("web")
    assert got.addresses == (NetworkAddress("", ipaddress.IPv4Address("10.96.0.10")),)
    assert got.port(443) is not None and got.port(443).target_port == 0
    assert got.port(81) is None
    assert got.subject_alt_names == ("x",)


def test_authorization_conversion() -> None:
    """An Authorization keeps groups/rules/matches, string matches and CIDRs."""
    msg = sec.Authorization(
        name="deny-bad", namespace="shop", scope=sec.Scope.GLOBAL, action=sec.Action.DENY,
        groups=[sec.Group(rules=[sec.Rules(matches=[sec.Match(
            principals=[sec.StringMatch(suffix="/sa/bad")],
            not_namespaces=[sec.StringMatch(presence=sec.betterproto_lib_google_protobuf.Empty())],
            source_ips=[sec.Address(address=ip("10.0.0.0"), length=8)],
            destination_ports=[8080],
        )])])],
    )
    got = Authorization.from_proto(sec.Authorization().parse(bytes(msg)), resource="shop/deny-bad")
    assert (got.key, got.scope, got.action) == ("shop/deny-bad", Scope.GLOBAL, Action.DENY)
    match = got.groups[0].rules[0].matches[0]
    assert match.principals == (StringMatch(StringMatchKind.SUFFIX, "/sa/bad"),)
    assert match.principals[0].matches("cluster.local/ns/shop/sa/bad")
    assert match.not_namespaces[0].kind is StringMatchKind.PRESENCE
    assert match.source_ips[0].contains(ipaddress.ip_address("10.9.9.9"))
    assert not match.source_ips[0].contains(ipaddress.ip_address("fd00::1"))
    assert match.destination_ports == (8080,)
    assert not match.is_empty


BAD = [
    pytest.param(
        lambda: address_from_proto(wl.Address(workload=workload("a", address="")), resource="x"),
        "workload.uid", id="address name differs from workload uid",
    ),
    pytest.param(
        lambda: Workload.from_proto(wl.Workload(uid="u", namespace="ns", addresses=[b"\x01\x02"])),
        "addresses[0]", id="two-byte address",
    ),
    pytest.param(
        lambda: Workload.from_proto(wl.Workload(uid="", namespace="ns")),
        "uid", id="empty uid",
    ),
    pytest.param(
        lambda: Workload.from_proto(wl.Workload(uid="u", namespace="ns", service_account="Bad_SA")),
        "service_account", id="identity does not parse",
    ),
    pytest.param(
        lambda: Workload.from_proto(
            wl.Workload(uid="u", namespace="ns", services={"nohost": wl.PortList()})
        ),
        "services['nohost']", id="service key without slash",
    ),
    pytest.param(
        lambda: Workload.from_proto(wl.Workload(uid="u", namespace="ns", tunnel_protocol=7)),
        "tunnel_protocol", id="unknown enum value",
    ),
    pytest.param(
        lambda: Service.from_proto(wl.Service(namespace="ns", hostname="h", ports=[wl.Port()])),
        "ports[0].service_port", id="service port zero",
    ),
    pytest.param(
        lambda: Service.from_proto(
            wl.Service(namespace="ns", hostname="h",
                       waypoint=wl.GatewayAddress(hbone_mtls_port=15008))
        ),
        "waypoint", id="waypoint without destination",
    ),
    pytest.param(
        lambda: address_from_proto(wl.Address(), resource="ns/h"),
        "type", id="address with neither workload nor service",
    ),
    pytest.param(
        lambda: Authorization.from_proto(
            sec.Authorization(name="p", namespace="ns", groups=[sec.Group(rules=[sec.Rules(
                matches=[sec.Match(principals=[sec.StringMatch()])])])])
        ),
        "groups[0].rules[0].matches[0].principals[0]", id="empty string match",
    ),
    pytest.param(
        lambda: Authorization.from_proto(
            sec.Authorization(name="p", namespace="ns", groups=[sec.Group(rules=[sec.Rules(
                matches=[sec.Match(source_ips=[sec.Address(address=ip("10.0.0.0"), length=33)])]
            )])])
        ),
        "groups[0].rules[0].matches[0].source_ips[0].length", id="prefix too long",
    ),
    pytest.param(
        lambda: Authorization.from_proto(policy("p"), resource="other/p"),
        "", id="policy name differs from resource name",
    ),
]


@pytest.mark.parametrize(("convert", "field"), BAD)
def test_bad_protos_raise_conversion_error_naming_the_field(convert, field) -> None:
    """Each invalid proto raises ConversionError (a ResourceRejected) naming the field."""
    with pytest.raises(ConversionError) as info:
        convert()
    assert info.value.field == field
    assert isinstance(info.value, ResourceRejected)
    assert info.value.resource in str(info.value)
