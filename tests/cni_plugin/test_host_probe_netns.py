"""The kubelet-probe exemption in real namespaces: node-originated probes skip ztunnel."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pnetns

from cni_plugin.redirect import apply, host_apply
from cni_plugin.redirect import rules as R
from cni_plugin.redirect.host_rules import HOST_TABLE, PROBE_SET_V4, HostProbeConfig
from meshcore.netns import call_in_netns
from tests.cni_plugin.netns_topology import (
    NODE_IP,
    POD_IP,
    POD_IP6,
    Topology,
    observe_nft,
)

pytestmark = pytest.mark.netns

APP_PORT = 8080


def _probe(topo: Topology, family: int = socket.AF_INET) -> tuple[str, int]:
    """Connect from the node (as this process's uid, root) to the pod's app port; return the
    listener that got it (app or ztunnel's 15006) and the peer address it saw."""
    addr = POD_IP6 if family == socket.AF_INET6 else POD_IP
    any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
    app = topo.listen(topo.pod, APP_PORT, any_addr)
    inbound = topo.listen(topo.pod, R.INBOUND_PLAINTEXT_PORT, any_addr)
    client = topo.sock(topo.node, family=family)
    with app, inbound, client:
        client.connect((addr, APP_PORT))
        for listener, port in ((app, APP_PORT), (inbound, R.INBOUND_PLAINTEXT_PORT)):
            listener.setblocking(False)
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                continue
            conn.close()
            return str(port), peer[0]
    raise AssertionError("the connection reached neither the app nor 15006")


@pytest.fixture
def enrolled(topo: Topology) -> Iterator[Topology]:
    """The pod holds the in-pod redirection (IPv4 and IPv6)."""
    apply.install(topo.pod_path, R.RedirectConfig(ipv6=True))
    yield topo


def test_probe_from_kubelet_uid_reaches_the_app_from_the_probe_address(
        enrolled: Topology) -> None:
    """With the pod's IP in the set, a root-owned connection from the node is SNATed to
    169.254.7.127 and the in-pod rules let it reach the app directly."""
    host_apply.install(enrolled.node_path, HostProbeConfig(os.getuid(), frozenset({POD_IP})))
    assert _probe(enrolled) == (str(APP_PORT), R.PROBE_IPV4)


def test_ipv6_probe_uses_the_v6_probe_address(enrolled: Topology) -> None:
    """The IPv6 set and rule SNAT to fd16:9254:7127:1337:ffff:ffff:ffff:ffff."""
    host_apply.install(enrolled.node_path, HostProbeConfig(os.getuid(), frozenset({POD_IP6})))
    assert _probe(enrolled, socket.AF_INET6) == (str(APP_PORT), R.PROBE_IPV6)


def test_other_users_connections_still_go_through_ztunnel(enrolled: Topology) -> None:
    """Only the kubelet's uid is exempted: our root socket lands on 15006 with its own IP."""
    host_apply.install(enrolled.node_path,
                       HostProbeConfig(os.getuid() + 4242, frozenset({POD_IP})))
    assert _probe(enrolled) == (str(R.INBOUND_PLAINTEXT_PORT), NODE_IP)


def test_pods_not_in_the_set_are_not_exempted(enrolled: Topology) -> None:
    """A pod whose IP the agent did not add is captured as before."""
    host_apply.install(enrolled.node_path, HostProbeConfig(os.getuid(), frozenset({"10.77.0.99"})))
    assert _probe(enrolled) == (str(R.INBOUND_PLAINTEXT_PORT), NODE_IP)


def test_forwarded_traffic_is_never_snated(enrolled: Topology) -> None:
    """A connection routed through the node from another namespace carries no local socket:
    it keeps its source and is captured by ztunnel's 15006."""
    other = f"{enrolled.pod}-x"
    pnetns.create(other)
    try:
        with IPRoute(netns=enrolled.node) as ipr:
            ipr.link("add", ifname="vethx", kind="veth", peer="eth0x")
            ipr.link("set", index=ipr.link_lookup(ifname="eth0x")[0], net_ns_fd=other)
            idx = ipr.link_lookup(ifname="vethx")[0]
            ipr.addr("add", index=idx, address="10.78.0.1", prefixlen=24)
            ipr.link("set", index=idx, state="up")
        with IPRoute(netns=other) as ipr:
            idx = ipr.link_lookup(ifname="eth0x")[0]
            ipr.addr("add", index=idx, address="10.78.0.2", prefixlen=24)
            ipr.link("set", index=idx, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway="10.78.0.1")

        def forward_on() -> None:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")

        call_in_netns(enrolled.node_path, forward_on)
        host_apply.install(enrolled.node_path, HostProbeConfig(os.getuid(), frozenset({POD_IP})))
        inbound = enrolled.listen(enrolled.pod, R.INBOUND_PLAINTEXT_PORT)
        client = enrolled.sock(other)
        with inbound, client:
            client.connect((POD_IP, APP_PORT))
            conn, peer = inbound.accept()
            conn.close()
        assert peer[0] == "10.78.0.2"
    finally:
        pnetns.remove(other)


def test_install_replaces_the_set_and_remove_deletes_only_our_table(topo: Topology) -> None:
    """Each install leaves exactly the given IPs; remove deletes the table, once."""
    host_apply.install(topo.node_path, HostProbeConfig(0, frozenset({"10.9.0.1", "10.9.0.2"})))
    host_apply.install(topo.node_path, HostProbeConfig(0, frozenset({"10.9.0.3"})))
    listing = observe_nft(topo.node)
    assert PROBE_SET_V4 in listing and "10.9.0.3" in listing and "10.9.0.1" not in listing
    assert host_apply.remove(topo.node_path) is True
    assert HOST_TABLE not in observe_nft(topo.node)
    assert host_apply.remove(topo.node_path) is False
