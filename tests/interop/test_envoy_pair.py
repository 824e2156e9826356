"""Envoy HBONE client → Envoy HBONE server → TCP echo: proves the configs in tests/support/envoy.py
with a real peer on both sides, before our implementation is plugged in (docs/testing.md)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.support.capture import PacketCapture, tls_records
from tests.support.creds import TestPki, TlsFiles
from tests.support.echo import EchoServer, echo_roundtrip, random_payload
from tests.support.envoy import (
    HBONE_PORT,
    EnvoyProcess,
    hbone_client_bootstrap,
    hbone_server_bootstrap,
)
from tests.support.netns import NetnsPair

pytestmark = [pytest.mark.interop, pytest.mark.netns]

CLIENT_PORT = 15001
ECHO_PORT = 9000
MARKER = b"HBONE-PLAINTEXT-MARKER-91c2"


def _start_pair(
    pair: NetnsPair,
    test_pki: TestPki,
    envoy_factory: Callable[..., EnvoyProcess],
    *,
    expected_server_id: str | None = None,
    allowed_client_ids: list[str] | None = None,
) -> tuple[EnvoyProcess, EnvoyProcess, TlsFiles, TlsFiles]:
    client_tls = test_pki.issue(test_pki.identity("shop", "cart"))
    server_tls = test_pki.issue(test_pki.identity("shop", "inventory"))
    server = envoy_factory(
        hbone_server_bootstrap(
            listen=(pair.ip_b, HBONE_PORT), tls=server_tls, target=None,
            allowed_client_ids=allowed_client_ids or [client_tls.identity.uri],
        ),
        name="server", netns=pair.b,
    )
    client = envoy_factory(
        hbone_client_bootstrap(
            listen=("127.0.0.1", CLIENT_PORT), server=(pair.ip_b, HBONE_PORT),
            authority=f"{pair.ip_b}:{ECHO_PORT}", tls=client_tls,
            expected_server_id=expected_server_id or server_tls.identity.uri,
        ),
        name="client", netns=pair.a,
    )
    return client, server, client_tls, server_tls


def _connect_client(pair: NetnsPair) -> socket.socket:
    with pair.a.enter():
        return socket.create_connection(("127.0.0.1", CLIENT_PORT), timeout=20)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends before it closes (a reset counts as a close)."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def test_8mb_byte_exact_both_ways(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """8 MiB through client Envoy, HBONE over the veth and server Envoy come back identical."""
    echo: EchoServer = echo_factory(netns_pair.ip_b, ECHO_PORT, netns=netns_pair.b)
    client, server, _, _ = _start_pair(netns_pair, test_pki, envoy_factory)
    payload = random_payload(8 * 1024 * 1024, MARKER)
    with _connect_client(netns_pair) as sock:
        assert echo_roundtrip(sock, payload) == payload
    assert echo.connections_served == 1
    client_stats = client.stats()
    assert client_stats["cluster.hbone_upstream.ssl.versions.TLSv1.3"] == 1
    assert client_stats["cluster.hbone_upstream.upstream_cx_http2_total"] == 1
    assert server.stats()["cluster.hbone_target.upstream_rq_200"] == 1


def test_wire_carries_only_tls(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """On the veth the marker never appears; both directions are wholly TLS 1.3 records."""
    echo_factory(netns_pair.ip_b, ECHO_PORT, netns=netns_pair.b)
    _start_pair(netns_pair, test_pki, envoy_factory)
    payload = random_payload(2 * 1024 * 1024, MARKER)
    capture = PacketCapture(netns_pair.if_b, netns=netns_pair.b,
                            hosts=(netns_pair.ip_a, netns_pair.ip_b))
    with capture, _connect_client(netns_pair) as sock:
        assert echo_roundtrip(sock, payload) == payload
    assert capture.lossless
    flows = capture.flows()
    assert len(flows) == 2, [str(k) for k in flows]
    assert capture.payload_bytes() > 2 * len(payload)
    for flow in flows.values():
        assert flow.complete, f"{flow.key}: holes {flow.holes}, syn {flow.saw_syn}"
        assert MARKER not in flow.data
        records, _ = tls_records(flow.data)
        assert records[0].content_type == 0x16
        assert 0x17 in {r.content_type for r in records}


def test_wrong_server_san_fails(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """A client expecting another SPIFFE ID refuses the server: no byte reaches the echo."""
    echo: EchoServer = echo_factory(netns_pair.ip_b, ECHO_PORT, netns=netns_pair.b)
    wrong = test_pki.identity("shop", "impostor").uri
    client, _, _, _ = _start_pair(netns_pair, test_pki, envoy_factory, expected_server_id=wrong)
    with _connect_client(netns_pair) as sock:
        sock.sendall(b"hello")
        assert _read_until_closed(sock) == b""
    assert client.stats()["cluster.hbone_upstream.ssl.fail_verify_san"] >= 1
    assert echo.connections_served == 0


def test_unlisted_client_is_refused(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """A server pinned to another client SPIFFE ID rejects the handshake."""
    echo: EchoServer = echo_factory(netns_pair.ip_b, ECHO_PORT, netns=netns_pair.b)
    other = test_pki.identity("shop", "someone-else").uri
    _, server, _, _ = _start_pair(netns_pair, test_pki, envoy_factory,
                                  allowed_client_ids=[other])
    with _connect_client(netns_pair) as sock:
        sock.sendall(b"hello")
        assert _read_until_closed(sock) == b""
    assert server.stats()[f"listener.{netns_pair.ip_b}_{HBONE_PORT}.ssl.fail_verify_san"] >= 1
    assert echo.connections_served == 0
