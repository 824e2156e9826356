"""Flags → WaypointConfig, identities, and the CONNECT header parsing of the proxy."""

from __future__ import annotations

import ipaddress

import pytest

from meshcore.identity import SpiffeId
from waypoint.__main__ import build_parser, config_from_args
from waypoint.config import parse_identity
from waypoint.errors import WaypointConfigError, WaypointError
from waypoint.proxy.context import parse_forwarded_for


def test_flags_build_the_config() -> None:
    """Name/namespace default the identity to <ns>/<name>; the node id says waypoint."""
    args = build_parser().parse_args([
        "--name", "wp", "--namespace", "shop", "--xds-address", "istiod:15012",
        "--listen", "127.0.0.1:16008", "--instance-ip", "10.0.0.9", "--pod-name", "wp-1"])
    cfg = config_from_args(args)
    assert cfg.identity == SpiffeId("cluster.local", "shop", "wp")
    assert cfg.gateway == "shop/wp"
    assert cfg.ca_address == cfg.xds_address == ("istiod", 15012)
    assert cfg.listen == ("127.0.0.1", 16008)
    assert cfg.xds_node_id == "waypoint~10.0.0.9~wp-1.shop~shop.svc.cluster.local"


def test_missing_gateway_name_is_an_error() -> None:
    """Without --name the waypoint refuses to start, naming the flag."""
    args = build_parser().parse_args(["--namespace", "shop"])
    args.name = None
    with pytest.raises(WaypointError, match="--name"):
        config_from_args(args)


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("shop/waypoint", SpiffeId("cluster.local", "shop", "waypoint"), id="ns-sa"),
    pytest.param("spiffe://td/ns/a/sa/b", SpiffeId("td", "a", "b"), id="spiffe-uri"),
])
def test_parse_identity(value: str, expected: SpiffeId) -> None:
    """Both identity spellings give the same SpiffeId type."""
    assert parse_identity(value) == expected


@pytest.mark.parametrize("value", [pytest.param("waypoint", id="no-namespace"),
                                   pytest.param("spiffe://td/x", id="bad-uri"),
                                   pytest.param("a/b/c", id="too-many-parts")])
def test_bad_identity_names_the_flag(value: str) -> None:
    """A malformed --identity is an operator error naming the flag."""
    with pytest.raises(WaypointConfigError, match="--identity"):
        parse_identity(value)


@pytest.mark.parametrize(("header", "ip", "addr"), [
    pytest.param('for="10.0.0.5:41234";host=r.shop.svc.cluster.local', "10.0.0.5",
                 "10.0.0.5:41234", id="ztunnel-style"),
    pytest.param('for="[fd00::1]:80"', "fd00::1", "[fd00::1]:80", id="ipv6"),
    pytest.param("for=10.1.1.1", "10.1.1.1", "10.1.1.1", id="bare"),
    pytest.param(None, None, "", id="absent"),
    pytest.param('for="unknown"', None, "unknown", id="obfuscated"),
])
def test_parse_forwarded_for(header: str | None, ip: str | None, addr: str) -> None:
    """The original client address comes from ztunnel's `forwarded: for=`."""
    got_ip, got_addr = parse_forwarded_for(header)
    assert got_ip == (ipaddress.ip_address(ip) if ip else None)
    assert got_addr == addr
