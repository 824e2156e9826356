"""Component tests of the per-pod data path in real network namespaces with real in-pod rules.

The mesh (pods A and B enrolled with the real nftables redirection, non-mesh C, a router) is
described in `netns_mesh.py`; every test drives apps in those namespaces and checks what
arrives where.
"""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing

from meshcore.hbone_trio import HboneStatusError, open_hbone_client
from meshcore.identity import SpiffeId
from tests.meshcore.hbone_trio.certs import credentials
from tests.support.netns import Netns
from tests.ztunnel.proxy.builders import snapshot
from tests.ztunnel.proxy.netns_mesh import (
    A_IP,
    A_IP6,
    APP_PORT,
    B_IP,
    B_IP6,
    C_IP,
    TIMEOUT,
    VIP,
    app_connect,
    base_items,
    deny_a,
    refused,
    roundtrip,
    running_mesh,
    strict,
)

pytestmark = [pytest.mark.netns, pytest.mark.trio]


def metric_line(exposition: str, name: str, reporter: str) -> str:
    """The one sample line of `name` with `reporter` in a Prometheus exposition."""
    lines = [line for line in exposition.splitlines()
             if line.startswith(name + "{") and f'reporter="{reporter}"' in line]
    assert len(lines) == 1, lines
    return lines[0]


# ---- tests ------------------------------------------------------------------------------------
async def test_pod_ip_roundtrip_through_hbone(topology: dict[str, Netns]) -> None:
    """A → B's pod IP: bytes round-trip via 15001 → HBONE 15008 → app; the app sees A's IP."""
    payload = os.urandom(300_000)
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            stream = await app_connect(topology["a"], B_IP, APP_PORT)
            assert await roundtrip(stream, payload) == payload
            assert mesh.echo_b.peers == [A_IP]
            client = mesh.proxies["a"].context.client
            assert client is not None and client.statistics().dials == 1
            inbound = await mesh.access.wait_for(1, "connection complete", 'direction="inbound"')
            assert f"src.addr={A_IP}:" in inbound[0]  # the pooled socket left pod A with its IP
            await mesh.access.wait_for(2, "connection complete")
            exposition = mesh.metrics.render()
    for reporter in ("source", "destination"):
        line = metric_line(exposition, "istio_tcp_received_bytes_total", reporter)
        assert 'connection_security_policy="mutual_tls"' in line
        assert 'source_principal="spiffe://cluster.local/ns/shop/sa/a"' in line
        assert line.endswith(f" {len(payload)}")


async def test_bytes_of_an_open_connection_show_at_a_scrape(topology: dict[str, Netns]) -> None:
    """A connection still open: a scrape already counts its bytes on both reporters (the
    relays are metered live, as ztunnel counts), and the close adds nothing twice."""
    payload = os.urandom(200_000)
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            stream = await app_connect(topology["a"], B_IP, APP_PORT)
            await stream.send_all(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.receive_some()
            await trio.testing.wait_all_tasks_blocked()
            live = mesh.metrics.render()
            await stream.aclose()
            await mesh.access.wait_for(2, "connection complete")
            final = mesh.metrics.render()
    for exposition in (live, final):
        for reporter in ("source", "destination"):
            for name in ("istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"):
                line = metric_line(exposition, name, reporter)
                assert line.endswith(f" {len(payload)}"), (name, reporter, line)


async def test_tunnelled_connection_gets_linked_client_and_server_spans(
        topology: dict[str, Netns]) -> None:
    """With tracing on, outbound and inbound ztunnel spans share a trace; inbound's parent is
    the outbound span (the CONNECT carried its traceparent)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from meshcore.telemetry import Tracing, TracingConfig

    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(enabled=True, service_name="ztunnel"), exporter=exporter)
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items()), tracing) as mesh:
            stream = await app_connect(topology["a"], B_IP, APP_PORT)
            assert await roundtrip(stream, b"traced") == b"traced"
            await stream.aclose()
            await mesh.access.wait_for(2, "connection complete")
    spans = {s.kind: s for s in exporter.get_finished_spans()}
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.context.trace_id == server.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert client.attributes["istio.source_principal"] == "spiffe://cluster.local/ns/shop/sa/a"


async def test_ipv6_pod_ip_roundtrip(topology: dict[str, Netns]) -> None:
    """A → B over IPv6: IP6T_SO_ORIGINAL_DST, a bracketed authority, A's v6 IP at the app."""
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            stream = await app_connect(topology["a"], B_IP6, APP_PORT)
            assert await roundtrip(stream, b"over v6") == b"over v6"
            assert mesh.echo_b.peers == [A_IP6]
            inbound = await mesh.access.wait_for(1, "connection complete", 'direction="inbound"')
            assert f'dst.hbone_addr="[{B_IP6}]:{APP_PORT}"' in inbound[0]


async def test_service_vip_roundtrip(topology: dict[str, Netns]) -> None:
    """A → the service VIP:80 reaches B's app on 8080 through HBONE; the app sees A's IP."""
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            for _ in range(2):
                stream = await app_connect(topology["a"], VIP, 80)
                assert await roundtrip(stream, b"via the VIP") == b"via the VIP"
            assert mesh.echo_b.peers == [A_IP, A_IP]
            client = mesh.proxies["a"].context.client
            assert client is not None and client.statistics().dials == 1  # pooled


async def test_l4_deny_policy_gets_401_and_closes_client(
    topology: dict[str, Netns], caplog: pytest.LogCaptureFixture
) -> None:
    """A DENY for A's principal: B answers 401, A's app connection ends, B's app sees nothing."""
    snap = snapshot(*base_items(), policies=(deny_a(),))
    with trio.fail_after(TIMEOUT), caplog.at_level("INFO", logger="access"):
        async with running_mesh(topology, snap) as mesh:
            stream = await app_connect(topology["a"], B_IP, APP_PORT)
            assert await refused(stream)
            assert mesh.echo_b.peers == []
    lines = [r.getMessage() for r in caplog.records if r.name == "access"]
    assert any("explicitly denied by: shop/deny-a" in line and "inbound" in line
               for line in lines)
    assert any("401" in line and "outbound" in line for line in lines)


async def test_open_connection_closed_on_policy_change(topology: dict[str, Netns]) -> None:
    """An open tunnelled connection is closed when a new policy denies it."""
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            stream = await app_connect(topology["a"], B_IP, APP_PORT)
            await stream.send_all(b"ping")
            assert await stream.receive_some(4) == b"ping"
            assert len(mesh.proxies["b"].tracker) == 1
            mesh.publish(snapshot(*base_items(), policies=(deny_a(),)))
            assert await refused(stream)
            assert mesh.proxies["b"].tracker.closed_by_policy_total == 1


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
async def test_plaintext_from_outside_mesh(topology: dict[str, Netns], mode: str) -> None:
    """Plaintext C → B (captured on 15006) is refused under STRICT and relayed under PERMISSIVE."""
    if mode == "STRICT":
        key = "istio-system/istio_converted_static_strict"
        snap = snapshot(*base_items(b_policies=(key,)), policies=(strict(),))
    else:
        snap = snapshot(*base_items())
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snap) as mesh:
            stream = await app_connect(topology["c"], B_IP, APP_PORT)
            if mode == "STRICT":
                assert await refused(stream)
                assert mesh.echo_b.peers == []
            else:
                assert await roundtrip(stream, b"plain") == b"plain"
                assert mesh.echo_b.peers == [C_IP]


async def test_passthrough_to_non_mesh_destination(topology: dict[str, Netns]) -> None:
    """A → C (not in the mesh): plain TCP from inside pod A, so C sees A's IP."""
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            stream = await app_connect(topology["a"], C_IP, 9090)
            assert await roundtrip(stream, b"outside") == b"outside"
            assert mesh.echo_c.peers == [A_IP]
            client = mesh.proxies["a"].context.client
            assert client is not None and client.statistics().dials == 0


@pytest.mark.parametrize(("authority", "status"), [
    pytest.param(f"{B_IP}:{APP_PORT}", 200, id="pod-ip-200"),
    pytest.param("echo.shop.svc.cluster.local:80", 200, id="service-hostname-200"),
    pytest.param(f"10.61.9.9:{APP_PORT}", 400, id="ip-mismatch-400"),
    pytest.param(f"{B_IP}:15006", 503, id="illegal-port-503"),
    pytest.param(f"{B_IP}:9999", 503, id="app-refuses-503"),
    pytest.param("other.shop.svc.cluster.local:80", 503, id="unknown-hostname-503"),
])
async def test_inbound_connect_statuses(
    topology: dict[str, Netns], authority: str, status: int
) -> None:
    """A CONNECT straight to B's 15008 (from non-mesh C) gets ztunnel's status per §2.4."""
    c = topology["c"]

    async def from_c(address: tuple[str, int]) -> trio.socket.SocketType:
        sock = trio.socket.from_stdlib_socket(c.call(socket.socket))
        await sock.connect(address)
        return sock

    creds = credentials(SpiffeId("cluster.local", "shop", "a"))
    with trio.fail_after(TIMEOUT):
        async with (running_mesh(topology, snapshot(*base_items())) as mesh,
                    open_hbone_client(socket_factory=from_c) as client):
            try:
                tunnel = await client.connect((B_IP, 15008), authority, creds,
                                              [SpiffeId("cluster.local", "shop", "b")])
            except HboneStatusError as exc:
                assert exc.status == status
                assert mesh.echo_b.peers == []
            else:
                assert status == 200
                assert await tunnel_roundtrip(tunnel, b"direct") == b"direct"
                assert mesh.echo_b.peers == [C_IP]  # the TCP peer: no forwarded header


async def tunnel_roundtrip(tunnel: trio.abc.HalfCloseableStream, payload: bytes) -> bytes:
    """Send `payload` through an HBONE tunnel, half-close, read the echo."""
    await tunnel.send_all(payload)
    await tunnel.send_eof()
    got = bytearray()
    async for chunk in tunnel:
        got += chunk
    await tunnel.aclose()
    return bytes(got)


async def test_drain_deadline_cuts_open_connection(topology: dict[str, Netns]) -> None:
    """A connection still open at the drain deadline is cut, and its access line says why."""
    with trio.fail_after(TIMEOUT):
        async with running_mesh(topology, snapshot(*base_items())) as mesh:
            held = await app_connect(topology["a"], B_IP, APP_PORT)
            await held.send_all(b"hold")
            assert await held.receive_some(4) == b"hold"
            async with trio.open_nursery() as nursery:
                await nursery.start(mesh.proxies["b"].drain, trio.current_time() + 0.3)
            assert await refused(held)
            cut = await mesh.access.wait_for(1, 'direction="inbound"', "before the tunnel finished")
            assert "connection complete" in cut[0]
