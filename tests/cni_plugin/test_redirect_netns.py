"""The in-pod redirection installed through pyroute2, exercised with real traffic in namespaces."""

from __future__ import annotations

import pathlib
import socket

import pytest

from cni_plugin.errors import NetnsNotFoundError, RedirectError
from cni_plugin.redirect import apply, nftnl
from cni_plugin.redirect import rules as R
from cni_plugin.redirect.netns import netlink_sockets
from tests.cni_plugin.netns_topology import (
    IP_TRANSPARENT,
    NODE_IP,
    POD_IP,
    Topology,
    observe_nft,
    observe_routing,
    original_dst,
)

pytestmark = pytest.mark.netns

OUTSIDE = ("203.0.113.7", 8443)  # TEST-NET-3: nothing real answers there


def _nothing_pending(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        listener.accept()
    except BlockingIOError:
        return True
    return False


def test_outbound_tcp_reaches_15001_with_original_destination(topo: Topology) -> None:
    """An app's outbound TCP lands on the 15001 listener; SO_ORIGINAL_DST names the real target."""
    apply.install(topo.pod_path, R.RedirectConfig())
    outbound = topo.listen(topo.pod, R.OUTBOUND_PORT)
    app = topo.sock(topo.pod)
    app.connect(OUTSIDE)
    app.sendall(b"hello")
    conn, _ = outbound.accept()
    assert original_dst(conn) == OUTSIDE
    assert conn.recv(5) == b"hello"


def test_inbound_plaintext_reaches_15006(topo: Topology) -> None:
    """A connection from the node to pod:80 arrives at the 15006 listener, source preserved."""
    apply.install(topo.pod_path, R.RedirectConfig())
    inbound = topo.listen(topo.pod, R.INBOUND_PLAINTEXT_PORT)
    client = topo.sock(topo.node)
    client.connect((POD_IP, 80))
    conn, peer = inbound.accept()
    assert peer[0] == NODE_IP
    assert original_dst(conn) == (POD_IP, 80)


def test_hbone_port_is_not_redirected(topo: Topology) -> None:
    """Pod port 15008 reaches the HBONE listener itself, not the 15006 capture."""
    apply.install(topo.pod_path, R.RedirectConfig())
    inbound = topo.listen(topo.pod, R.INBOUND_PLAINTEXT_PORT)
    hbone = topo.listen(topo.pod, R.HBONE_PORT)
    client = topo.sock(topo.node)
    client.connect((POD_IP, R.HBONE_PORT))
    conn, _ = hbone.accept()
    assert conn.getsockname() == (POD_IP, R.HBONE_PORT)
    assert _nothing_pending(inbound)


def test_ztunnel_marked_socket_bypasses_redirection(topo: Topology) -> None:
    """A pod socket carrying mark 0x539 reaches its real destination on the node."""
    apply.install(topo.pod_path, R.RedirectConfig())
    outbound = topo.listen(topo.pod, R.OUTBOUND_PORT)
    server = topo.listen(topo.node, 9090)
    zt = topo.sock(topo.pod)
    zt.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, R.INPOD_MARK)
    zt.connect((NODE_IP, 9090))
    _conn, peer = server.accept()
    assert peer[0] == POD_IP
    assert _nothing_pending(outbound)


def test_transparent_inbound_replies_route_back_to_ztunnel(topo: Topology) -> None:
    """ztunnel-style spoofed connection to the app: the app's replies come back via table 100."""
    apply.install(topo.pod_path, R.RedirectConfig())
    app = topo.listen(topo.pod, 8080)
    zt = topo.sock(topo.pod)
    zt.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, R.INPOD_MARK)
    zt.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    zt.bind((NODE_IP, 0))  # the remote client's address, as ztunnel does
    zt.connect((POD_IP, 8080))
    conn, peer = app.accept()
    assert peer[0] == NODE_IP
    conn.sendall(b"reply")
    assert zt.recv(5) == b"reply"


def test_ipv6_outbound_is_redirected_when_enabled(topo: Topology) -> None:
    """With ipv6 on, outbound TCP over IPv6 also lands on 15001."""
    apply.install(topo.pod_path, R.RedirectConfig(ipv6=True))
    outbound = topo.listen(topo.pod, R.OUTBOUND_PORT, "::")
    app = topo.sock(topo.pod, family=socket.AF_INET6)
    app.connect(("2001:db8::7", 443))
    conn, _ = outbound.accept()
    assert conn.getsockname()[1] == R.OUTBOUND_PORT
    assert original_dst(conn) == ("2001:db8::7", 443)


def test_install_twice_is_a_no_op(topo: Topology) -> None:
    """A second install with the same config changes nothing (same rule handles)."""
    assert apply.install(topo.pod_path, R.RedirectConfig()) is True
    first = observe_nft(topo.pod), observe_routing(topo.pod)
    assert apply.install(topo.pod_path, R.RedirectConfig()) is False
    assert (observe_nft(topo.pod), observe_routing(topo.pod)) == first
    assert apply.is_installed(topo.pod_path, R.RedirectConfig())


def test_partial_install_is_replaced(topo: Topology) -> None:
    """A missing table and a missing ip rule are both restored by the next install."""
    before = observe_nft(topo.pod), observe_routing(topo.pod)
    apply.install(topo.pod_path, R.RedirectConfig())
    full = observe_nft(topo.pod), observe_routing(topo.pod)
    (nf_sock,) = netlink_sockets(topo.pod_path, (12,))  # NETLINK_NETFILTER
    session = nftnl.NftSession(nf_sock)
    session.commit(nftnl.delete_table_messages(R.MANGLE_TABLE))
    session.close()
    from pyroute2 import IPRoute

    with IPRoute(netns=topo.pod) as ipr:
        ipr.rule("del", family=socket.AF_INET, fwmark=R.TPROXY_MARK, fwmask=R.TPROXY_MASK,
                 priority=R.RULE_PRIORITY, table=R.ROUTE_TABLE)
    assert not apply.is_installed(topo.pod_path, R.RedirectConfig())
    assert apply.install(topo.pod_path, R.RedirectConfig()) is True
    assert (observe_nft(topo.pod), observe_routing(topo.pod)) == full != before


def test_config_change_replaces_tables(topo: Topology) -> None:
    """Turning DNS capture off removes the raw table and the 15053 rules."""
    apply.install(topo.pod_path, R.RedirectConfig(dns_capture=True))
    assert R.RAW_TABLE in observe_nft(topo.pod)
    assert apply.install(topo.pod_path, R.RedirectConfig()) is True
    listing = observe_nft(topo.pod)
    assert R.RAW_TABLE not in listing and "15053" not in listing


@pytest.mark.parametrize("config", [
    pytest.param(R.RedirectConfig(), id="ipv4"),
    pytest.param(R.RedirectConfig(ipv6=True, dns_capture=True), id="dual-stack-dns"),
])
def test_remove_restores_the_netns_exactly(topo: Topology, config: R.RedirectConfig) -> None:
    """After removal nft is empty and ip rules/routes equal the dump taken before install."""
    before = observe_routing(topo.pod)
    apply.install(topo.pod_path, config)
    assert observe_routing(topo.pod) != before
    assert apply.remove(topo.pod_path) is True
    assert observe_nft(topo.pod).strip() == ""
    assert observe_routing(topo.pod) == before
    assert apply.remove(topo.pod_path) is False


def test_after_removal_traffic_flows_directly(topo: Topology) -> None:
    """Once removed, outbound TCP reaches the real server instead of 15001."""
    apply.install(topo.pod_path, R.RedirectConfig())
    apply.remove(topo.pod_path)
    outbound = topo.listen(topo.pod, R.OUTBOUND_PORT)
    server = topo.listen(topo.node, 9091)
    app = topo.sock(topo.pod)
    app.connect((NODE_IP, 9091))
    server.accept()
    assert _nothing_pending(outbound)


def test_vanished_netns_fails_cleanly(topo: Topology) -> None:
    """A netns path that is gone raises NetnsNotFoundError and changes the node netns not at all."""
    node_before = observe_nft(topo.node), observe_routing(topo.node)
    with pytest.raises(NetnsNotFoundError, match="does not exist"):
        apply.install(f"/var/run/netns/{topo.pod}-gone", R.RedirectConfig())
    assert (observe_nft(topo.node), observe_routing(topo.node)) == node_before


def test_own_netns_is_refused() -> None:
    """Programming the caller's own netns (a wrong CNI_NETNS) is refused."""
    with pytest.raises(RedirectError, match="own"):
        apply.install("/proc/self/ns/net", R.RedirectConfig())


def test_failed_install_leaves_nothing_behind(topo: Topology) -> None:
    """A foreign default route in table 100 makes install fail; nothing of ours remains."""
    from pyroute2 import IPRoute

    with IPRoute(netns=topo.pod) as ipr:
        ipr.route("add", dst="0.0.0.0/0", type="blackhole", table=R.ROUTE_TABLE)
    before = observe_nft(topo.pod), observe_routing(topo.pod)
    with pytest.raises(RedirectError, match="table 100"):
        apply.install(topo.pod_path, R.RedirectConfig())
    assert (observe_nft(topo.pod), observe_routing(topo.pod)) == before


def test_leftover_netns_file_counts_as_gone(tmp_path: pathlib.Path) -> None:
    """A netns path that is now a plain file (unmounted sandbox) is 'gone' for add and remove."""
    leftover = tmp_path / "cni-leftover"
    leftover.touch()
    with pytest.raises(NetnsNotFoundError, match="not a network namespace"):
        apply.install(str(leftover), R.RedirectConfig())
    assert apply.remove(str(leftover)) is False
