"""Our HBONE (meshcore.hbone_trio) against Envoy 1.40 in both roles, between two namespaces:
ours-client → Envoy-server and Envoy-client → ours-server, as planned in docs/testing.md."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
from collections.abc import Callable

import pytest
import trio

from bench.procstat import wait_listening
from meshcore.hbone_trio import (
    ConnectOutcome,
    ConnectRequest,
    HboneHandshakeError,
    HboneStatusError,
    HboneTrioError,
    open_hbone_client,
    serve_hbone,
)
from meshcore.tlsconfig import WorkloadCredentials
from tests.support.capture import PacketCapture, tls_records
from tests.support.creds import TestPki, TlsFiles
from tests.support.echo import EchoServer, echo_roundtrip, random_payload
from tests.support.envoy import (
    HBONE_PORT,
    MAX_FRAME_SIZE,
    STREAM_WINDOW,
    EnvoyProcess,
    hbone_client_bootstrap,
    hbone_server_bootstrap,
)
from tests.support.netns import Netns, NetnsPair

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.trio]

ECHO_PORT = 9000
IPERF_PORT = 5201
CLIENT_PORT = 15001
MARKER = b"OURS-PLAINTEXT-MARKER-5d0e"


def _creds(tls: TlsFiles) -> WorkloadCredentials:
    return WorkloadCredentials.from_pem(
        tls.cert_chain.read_bytes(), tls.private_key.read_bytes(), tls.root.read_bytes()
    )


def _dialer(ns: Netns):  # type: ignore[no-untyped-def]
    """A socket factory that creates the socket inside `ns`, then connects from trio."""

    async def factory(address: tuple[str, int]) -> trio.socket.SocketType:
        sock = trio.socket.from_stdlib_socket(ns.call(socket.socket))
        try:
            await sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    return factory


async def _exchange(stream: trio.abc.HalfCloseableStream, payload: bytes) -> bytes:
    """Send `payload` and EOF while reading until the peer's EOF; return what was read."""
    received = bytearray()

    async def sender() -> None:
        view = memoryview(payload)
        for start in range(0, len(view), 256 * 1024):
            await stream.send_all(view[start : start + 256 * 1024])
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while chunk := await stream.receive_some(256 * 1024):
            received += chunk
    return bytes(received)


# --- ours as the HBONE client, Envoy as the HBONE server -------------------------------------


def _envoy_server(pair: NetnsPair, pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
                  *, allowed: list[str] | None = None) -> tuple[EnvoyProcess, TlsFiles, TlsFiles]:
    client_tls = pki.issue(pki.identity("shop", "cart"))
    server_tls = pki.issue(pki.identity("shop", "inventory"))
    server = envoy_factory(
        hbone_server_bootstrap(listen=(pair.ip_b, HBONE_PORT), tls=server_tls, target=None,
                               allowed_client_ids=allowed or [client_tls.identity.uri]),
        name="server", netns=pair.b,
    )
    return server, client_tls, server_tls


async def test_ours_client_8mb_through_envoy_server(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """8 MiB over our tunnel via Envoy's server come back byte-exact; Envoy sent our windows."""
    pair = netns_pair
    echo_factory(pair.ip_b, ECHO_PORT, netns=pair.b)
    server, client_tls, server_tls = _envoy_server(pair, test_pki, envoy_factory)
    payload = random_payload(8 * 1024 * 1024, MARKER)
    async with open_hbone_client(socket_factory=_dialer(pair.a)) as client:
        tunnel = await client.connect((pair.ip_b, HBONE_PORT), f"{pair.ip_b}:{ECHO_PORT}",
                                      _creds(client_tls), [server_tls.identity])
        assert await _exchange(tunnel, payload) == payload
        (conn,) = client.connections()
        core = conn.statistics().core
    assert server.stats()["cluster.hbone_target.upstream_rq_200"] == 1
    # Envoy's server config advertises ztunnel's HTTP/2 settings (tests/support/envoy.py).
    assert (core.peer_initial_window_size, core.peer_max_frame_size) == (
        STREAM_WINDOW, MAX_FRAME_SIZE)


async def test_ours_client_pools_streams_on_one_connection(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """Four concurrent tunnels share one HBONE connection: Envoy counts 1 connection, 4 streams."""
    pair = netns_pair
    echo_factory(pair.ip_b, ECHO_PORT, netns=pair.b)
    server, client_tls, server_tls = _envoy_server(pair, test_pki, envoy_factory)
    creds = _creds(client_tls)
    payloads = [random_payload(512 * 1024) for _ in range(4)]
    results: dict[int, bytes] = {}
    async with open_hbone_client(socket_factory=_dialer(pair.a)) as client:

        async def one(i: int) -> None:
            tunnel = await client.connect((pair.ip_b, HBONE_PORT), f"{pair.ip_b}:{ECHO_PORT}",
                                          creds, [server_tls.identity])
            results[i] = await _exchange(tunnel, payloads[i])

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
        assert client.statistics().connections == 1
    assert [results[i] for i in range(4)] == payloads
    stats = server.stats()
    assert stats["http.hbone_server.downstream_cx_total"] == 1
    assert stats["cluster.hbone_target.upstream_rq_200"] == 4


async def test_ours_client_refuses_wrong_server_identity(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    """Expecting another SPIFFE ID, our client refuses Envoy and names what it found."""
    pair = netns_pair
    _, client_tls, server_tls = _envoy_server(pair, test_pki, envoy_factory)
    impostor = test_pki.identity("shop", "impostor")
    async with open_hbone_client(socket_factory=_dialer(pair.a)) as client:
        with pytest.raises(HboneHandshakeError) as info:
            await client.connect((pair.ip_b, HBONE_PORT), f"{pair.ip_b}:{ECHO_PORT}",
                                 _creds(client_tls), [impostor])
    assert info.value.found == (server_tls.identity,)


async def test_envoy_server_refuses_unlisted_client(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    """Envoy pinned to another client ID rejects ours; the tunnel never opens."""
    pair = netns_pair
    other = test_pki.identity("shop", "someone-else").uri
    server, client_tls, server_tls = _envoy_server(pair, test_pki, envoy_factory,
                                                   allowed=[other])
    async with open_hbone_client(socket_factory=_dialer(pair.a)) as client:
        with pytest.raises(HboneTrioError):
            await client.connect((pair.ip_b, HBONE_PORT), f"{pair.ip_b}:{ECHO_PORT}",
                                 _creds(client_tls), [server_tls.identity])
    assert server.stats()[f"listener.{pair.ip_b}_{HBONE_PORT}.ssl.fail_verify_san"] >= 1


async def test_closed_destination_gets_503_from_envoy(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    """A CONNECT to a port nobody listens on comes back as HboneStatusError(503)."""
    pair = netns_pair
    _, client_tls, server_tls = _envoy_server(pair, test_pki, envoy_factory)
    async with open_hbone_client(socket_factory=_dialer(pair.a)) as client:
        with pytest.raises(HboneStatusError) as info:
            await client.connect((pair.ip_b, HBONE_PORT), f"{pair.ip_b}:9",
                                 _creds(client_tls), [server_tls.identity])
    assert info.value.status == 503


async def test_ours_client_wire_carries_only_tls(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """Between our client and Envoy the veth carries TLS records only, never the marker."""
    pair = netns_pair
    echo_factory(pair.ip_b, ECHO_PORT, netns=pair.b)
    _, client_tls, server_tls = _envoy_server(pair, test_pki, envoy_factory)
    payload = random_payload(2 * 1024 * 1024, MARKER)
    capture = PacketCapture(pair.if_b, netns=pair.b, hosts=(pair.ip_a, pair.ip_b))
    with capture:
        async with open_hbone_client(socket_factory=_dialer(pair.a)) as client:
            tunnel = await client.connect((pair.ip_b, HBONE_PORT), f"{pair.ip_b}:{ECHO_PORT}",
                                          _creds(client_tls), [server_tls.identity])
            assert await _exchange(tunnel, payload) == payload
    assert capture.lossless
    flows = capture.flows()
    assert len(flows) == 2
    for flow in flows.values():
        assert flow.complete, f"{flow.key}: holes {flow.holes}"
        assert MARKER not in flow.data
        records, _ = tls_records(flow.data)
        assert {r.content_type for r in records} >= {0x16, 0x17}


# --- Envoy as the HBONE client, ours as the HBONE server -------------------------------------


class OurServer:
    """serve_hbone in namespace b, dialing each `:authority` from b; records what it saw."""

    def __init__(self, pair: NetnsPair, tls: TlsFiles) -> None:
        self.pair = pair
        self.creds = _creds(tls)
        self.requests: list[ConnectRequest] = []

    async def handle_connect(self, request: ConnectRequest) -> ConnectOutcome:
        self.requests.append(request)
        try:
            sock = await _dialer(self.pair.b)((request.host, request.port))
        except OSError as exc:
            return ConnectOutcome.unreachable(str(exc))
        return ConnectOutcome.accept(trio.SocketStream(sock))

    async def start(self, nursery: trio.Nursery) -> None:
        raw = self.pair.b.call(socket.create_server, (self.pair.ip_b, HBONE_PORT))
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
        await nursery.start(serve_hbone, [listener], lambda _addr: self.creds,
                            self.handle_connect)


def _envoy_client(pair: NetnsPair, client_tls: TlsFiles, server_tls: TlsFiles,
                  envoy_factory: Callable[..., EnvoyProcess], *,
                  authority: str | None = None) -> EnvoyProcess:
    return envoy_factory(
        hbone_client_bootstrap(listen=("127.0.0.1", CLIENT_PORT), server=(pair.ip_b, HBONE_PORT),
                               authority=authority or f"{pair.ip_b}:{ECHO_PORT}", tls=client_tls,
                               expected_server_id=server_tls.identity.uri),
        name="client", netns=pair.a,
    )


def _through_envoy_client(pair: NetnsPair, payload: bytes) -> bytes:
    with pair.a.enter():
        sock = socket.create_connection(("127.0.0.1", CLIENT_PORT), timeout=20)
    with sock:
        return echo_roundtrip(sock, payload)


def _refused_through_envoy_client(pair: NetnsPair) -> bytes:
    """Send a few bytes via Envoy's client; return what comes back before close or reset."""
    with pair.a.enter():
        sock = socket.create_connection(("127.0.0.1", CLIENT_PORT), timeout=20)
    data = bytearray()
    with sock:
        sock.sendall(b"hello")
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return bytes(data)


async def test_envoy_client_8mb_through_ours(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer],
) -> None:
    """8 MiB from Envoy's HBONE client through our server come back byte-exact; we see its ID."""
    pair = netns_pair
    echo_factory(pair.ip_b, ECHO_PORT, netns=pair.b)
    client_tls = test_pki.issue(test_pki.identity("shop", "cart"))
    server_tls = test_pki.issue(test_pki.identity("shop", "inventory"))
    ours = OurServer(pair, server_tls)
    _envoy_client(pair, client_tls, server_tls, envoy_factory)
    payload = random_payload(8 * 1024 * 1024, MARKER)
    async with trio.open_nursery() as nursery:
        await ours.start(nursery)
        got = await trio.to_thread.run_sync(_through_envoy_client, pair, payload)
        nursery.cancel_scope.cancel()
    assert got == payload
    assert [(r.authority, r.peer_identity) for r in ours.requests] == [
        (f"{pair.ip_b}:{ECHO_PORT}", client_tls.identity)
    ]


@pytest.mark.slow
async def test_envoy_client_repeated_iperf3_through_ours(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
) -> None:
    """Eight iperf3 runs in a row through Envoy's client and our server all complete."""
    pair = netns_pair
    client_tls = test_pki.issue(test_pki.identity("shop", "cart"))
    server_tls = test_pki.issue(test_pki.identity("shop", "inventory"))
    ours = OurServer(pair, server_tls)
    envoy = _envoy_client(pair, client_tls, server_tls, envoy_factory,
                          authority=f"{pair.ip_b}:{IPERF_PORT}")
    outcomes = []
    async with trio.open_nursery() as nursery:
        await ours.start(nursery)
        for _ in range(8):
            outcome = await trio.to_thread.run_sync(_one_iperf3_run, pair)
            outcomes.append(outcome)
            if outcome != "ok":
                break
        nursery.cancel_scope.cancel()
    assert outcomes == ["ok"] * 8
    assert envoy.stats()["cluster.hbone_upstream.upstream_cx_total"] == 1


def _one_iperf3_run(pair: NetnsPair) -> str:
    """A one-off iperf3 server in b, 100 MB from a through Envoy's client: "ok" or what broke."""
    server = pair.b.popen(["iperf3", "-s", "-1", "-B", pair.ip_b, "-p", str(IPERF_PORT)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(server.pid, {IPERF_PORT}, what="iperf3 server")
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(CLIENT_PORT), "-n", "100M", "-J"]
        try:
            done = pair.a.run(argv, timeout=10)
        except subprocess.TimeoutExpired:
            return "stalled"
        return "ok" if "error" not in json.loads(done.stdout) else done.stdout
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


async def test_foreign_root_client_is_refused(
    netns_pair: NetnsPair, test_pki: TestPki, envoy_factory: Callable[..., EnvoyProcess],
    echo_factory: Callable[..., EchoServer], tmp_path: pathlib.Path,
) -> None:
    """An Envoy client whose certificate comes from another root never gets a tunnel."""
    pair = netns_pair
    echo = echo_factory(pair.ip_b, ECHO_PORT, netns=pair.b)
    foreign = TestPki(tmp_path / "foreign")
    client_tls = foreign.issue(foreign.identity("shop", "cart"))
    server_tls = test_pki.issue(test_pki.identity("shop", "inventory"))
    # The Envoy client trusts our root for the server, but presents the foreign leaf.
    client_tls = TlsFiles(client_tls.identity, client_tls.cert_chain, client_tls.private_key,
                          server_tls.root)
    ours = OurServer(pair, server_tls)
    _envoy_client(pair, client_tls, server_tls, envoy_factory)
    async with trio.open_nursery() as nursery:
        await ours.start(nursery)
        got = await trio.to_thread.run_sync(_refused_through_envoy_client, pair)
        nursery.cancel_scope.cancel()
    assert got == b""
    assert ours.requests == []
    assert echo.connections_served == 0
