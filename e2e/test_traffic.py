"""Traffic between enrolled pods: mTLS on the wire, the real client IP, VIP load balancing, and
the Istio TCP metrics both ztunnels report for it.

The sandbox starts with namespace `shop` enrolled (manifest sets `base` + `enrolled`).
"""

from __future__ import annotations

import secrets

import pytest

from ambientctl.sandbox import Sandbox
from e2e import mesh
from e2e.conftest import NEEDS_ROOT
from tests.support.capture import TLS_CONTENT_TYPES, tls_records

pytestmark = [pytest.mark.netns, NEEDS_ROOT]
SANDBOX_SETS = ("base", "enrolled")

ECHO_VIP, TCP_ECHO_VIP = "10.96.0.10", "10.96.0.11"
CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"
TCP_ECHO_ID = "spiffe://cluster.local/ns/shop/sa/tcp-echo"


def test_mtls_on_the_wire_between_nodes(sandbox: Sandbox):
    """shop/capture (node1) → tcp-echo (node2) through the VIP: the capture on node1's underlay
    link holds only TLS records to port 15008, complete from the SYN, never the marker."""
    marker = f"PLAINTEXT-MARKER-{secrets.token_hex(8)}".encode()
    client, server = sandbox.pod_ip("shop/capture"), sandbox.pod_ip("shop/tcp-echo")
    with mesh.uplink_capture(sandbox, "node1", (client, server)) as cap:
        got = mesh.tcp_exchange(sandbox, "shop/capture", TCP_ECHO_VIP, 9000, marker * 4)
    assert got.echoed(marker * 4), got
    assert cap.lossless, (cap.kernel_drops, cap.truncated)
    flows = cap.flows()
    assert flows, "the capture saw no traffic between the two pods"
    assert {15008} == {k.dport for k in flows if k.src == client}  # HBONE only, no port 9000
    for key, flow in flows.items():
        assert flow.complete, f"{key}: capture incomplete, cannot prove absence"
        assert marker not in flow.data, f"{key}: plaintext on the wire"
        records, cut = tls_records(flow.data)  # raises at the first non-TLS byte
        assert cut == 0 and records, key
        assert records[0].content_type == 0x16  # starts with a handshake
    outbound = next(f for k, f in flows.items() if k.src == client)
    kinds = {TLS_CONTENT_TYPES[r.content_type] for r in tls_records(outbound.data)[0]}
    assert "application_data" in kinds
    assert sum(r.length for r in tls_records(outbound.data)[0]
               if r.content_type == 0x17) >= len(marker) * 4


@pytest.mark.parametrize("target", [
    pytest.param("shop/echo-1", id="same-node-pod-ip"),
    pytest.param("shop/echo-2", id="other-node-pod-ip"),
    pytest.param("vip", id="service-vip"),
])
def test_server_sees_the_client_pod_ip(sandbox: Sandbox, target: str):
    """The http-echo app's socket peer is the client pod's own IP (in-pod ztunnel connects
    with the original source), for a pod on the same node, the other node, and via the VIP."""
    host, port = (ECHO_VIP, 80) if target == "vip" else (sandbox.pod_ip(target), 8080)
    doc = mesh.http_json(sandbox, "shop/client", host, port)
    if target != "vip":
        assert doc["pod"] == target
    assert doc["peer"].split(":")[0] == sandbox.pod_ip("shop/client")
    assert doc["local"].split(":")[0] == sandbox.pod_ip(doc["pod"])


def test_service_vip_balances_across_endpoints_on_two_nodes(sandbox: Sandbox):
    """20 requests to the echo VIP reach both endpoints (echo-1 on node1, echo-2 on node2).

    Endpoints are picked at random: the chance that 20 picks miss one of two is 2^-19."""
    seen = [mesh.http_json(sandbox, "shop/client", ECHO_VIP, 80)["pod"] for _ in range(20)]
    assert set(seen) == {"shop/echo-1", "shop/echo-2"}, seen
    assert {sandbox.node_of(p) for p in seen} == {"node1", "node2"}


def _tcp_series(sb: Sandbox, node: str, reporter: str) -> list[mesh.Sample]:
    return [s for s in mesh.scrape(sb, node) if s.name.startswith("istio_tcp_")
            and s.labels.get("reporter") == reporter
            and s.labels.get("source_workload") == "client"
            and s.labels.get("destination_workload") == "tcp-echo"]


def _sum(samples: list[mesh.Sample], name: str) -> float:
    return sum(s.value for s in samples if s.name == name)


def test_metrics_count_connections_bytes_and_identities(sandbox: Sandbox):
    """After 3 connections client → tcp-echo VIP with 1000 bytes each, both ztunnels (source on
    node1, destination on node2) count 3 opened and 3 closed with Istio's labels and at least
    the bytes moved in each direction."""
    conns, size = 3, 1000
    reporters = {"source": "node1", "destination": "node2"}
    before = {r: _tcp_series(sandbox, n, r) for r, n in reporters.items()}
    for i in range(conns):
        payload = (f"{i}".encode() + secrets.token_bytes(size))[:size]
        assert mesh.tcp_exchange(sandbox, "shop/client", TCP_ECHO_VIP, 9000, payload).echoed(
            payload)

    def delta(reporter: str, name: str) -> float:
        now = _tcp_series(sandbox, reporters[reporter], reporter)
        return _sum(now, name) - _sum(before[reporter], name)

    for reporter, node in reporters.items():
        mesh.poll_until(lambda r=reporter: delta(r, "istio_tcp_connections_closed_total")
                        == conns, timeout=5, what=f"{reporter} ztunnel to count {conns} closes",
                        last=lambda r=reporter: delta(r, "istio_tcp_connections_closed_total"))
        assert delta(reporter, "istio_tcp_connections_opened_total") == conns
        assert delta(reporter, "istio_tcp_connections_failed_total") == 0
        assert delta(reporter, "istio_tcp_received_bytes_total") >= conns * size
        assert delta(reporter, "istio_tcp_sent_bytes_total") >= conns * size
        series = _tcp_series(sandbox, node, reporter)
        assert series
        for s in series:
            want = {
                "reporter": reporter, "source_workload": "client",
                "source_workload_namespace": "shop", "source_principal": CLIENT_ID,
                "source_app": "client", "destination_workload": "tcp-echo",
                "destination_workload_namespace": "shop",
                "destination_principal": TCP_ECHO_ID,
                "destination_service": "tcp-echo.shop.svc.cluster.local",
                "destination_service_name": "tcp-echo",
                "destination_service_namespace": "shop",
                "connection_security_policy": "mutual_tls", "request_protocol": "tcp",
                "response_flags": "-",
            }
            assert {k: s.labels.get(k) for k in want} == want, (reporter, s.name)
