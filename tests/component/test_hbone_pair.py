"""HBONE client pool -> HBONE server -> TCP echo, over real loopback sockets and real certs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from meshcore import hbone, pki, tlsconfig
from meshcore.hbone_trio import (
    ClientConfig,
    ConnectOutcome,
    ConnectRequest,
    HboneHandshakeError,
    HboneStatusError,
    RelayResult,
    TunnelStream,
    open_hbone_client,
    serve_hbone,
)
from meshcore.hbone_trio.errors import ConnectionLostError
from tests.meshcore.hbone_trio import certs

pytestmark = pytest.mark.trio

CLIENT = certs.cached("client", "shop")
SERVER = certs.cached("server", "shop")
DENIED = certs.cached("denied", "shop")


async def _echo(stream: trio.SocketStream) -> None:
    """TCP echo that half-closes after the client's EOF."""
    try:
        while data := await stream.receive_some(256 * 1024):
            await stream.send_all(data)
        await stream.send_eof()
    except trio.BrokenResourceError:
        pass


class Env:
    """A running echo server and HBONE server; records relay results."""

    def __init__(self) -> None:
        self.echo_port = 0
        self.hbone_addr: tuple[str, int] = ("127.0.0.1", 0)
        self.results: list[RelayResult] = []
        self.requests: list[ConnectRequest] = []
        self.relay_done = trio.Event()

    def on_done(self, result: RelayResult) -> None:
        self.results.append(result)
        self.relay_done.set()

    async def handle_connect(self, request: ConnectRequest) -> ConnectOutcome:
        self.requests.append(request)
        if request.peer_identity == DENIED.identity:
            return ConnectOutcome.deny("policy")
        try:
            upstream = await trio.open_tcp_stream(request.host, request.port)
        except OSError as exc:
            return ConnectOutcome.unreachable(str(exc))
        return ConnectOutcome.accept(
            upstream, [("baggage", "k8s.namespace.name=shop")], on_done=self.on_done
        )


@contextlib.asynccontextmanager
async def hbone_env(server_creds: tlsconfig.WorkloadCredentials = SERVER) -> AsyncIterator[Env]:
    env = Env()
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        env.echo_port = echo[0].socket.getsockname()[1]
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(
            serve_hbone, listeners, lambda local: server_creds, env.handle_connect
        )
        env.hbone_addr = ("127.0.0.1", listeners[0].socket.getsockname()[1])
        yield env
        nursery.cancel_scope.cancel()


async def _roundtrip(tunnel, payload: bytes) -> bytes:  # type: ignore[no-untyped-def]
    got = bytearray()

    async def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 300_000):
            await tunnel.send_all(view[i : i + 300_000])
        await tunnel.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while chunk := await tunnel.receive_some():
            got += chunk
    return bytes(got)


async def test_megabytes_echo_byte_exact_both_ways() -> None:
    """8 MiB through client pool -> HBONE server -> TCP echo comes back byte-exact."""
    payload = os.urandom(8 << 20)
    async with hbone_env() as env, open_hbone_client() as client:
        tunnel = await client.connect(
            env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
        )
        assert tunnel.response is not None
        assert ("baggage", "k8s.namespace.name=shop") in tunnel.response.headers
        echoed = await _roundtrip(tunnel, payload)
        await tunnel.aclose()
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        with trio.fail_after(5):
            await env.relay_done.wait()
    assert env.results[0].a_to_b == len(payload)
    assert env.results[0].b_to_a == len(payload)
    assert env.requests[0].peer_identity == CLIENT.identity


async def test_half_close_keeps_the_other_direction_flowing() -> None:
    """After the client's EOF, the echo's remaining bytes still arrive, then EOF."""
    async with hbone_env() as env, open_hbone_client() as client:
        tunnel = await client.connect(
            env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
        )
        await tunnel.send_all(b"ping")
        await tunnel.send_eof()
        got = bytearray()
        while chunk := await tunnel.receive_some():
            got += chunk
        assert got == b"ping"
        await tunnel.aclose()


async def test_fifty_concurrent_streams_share_one_connection() -> None:
    """50 concurrent tunnels to one destination ride a single pooled HBONE connection."""
    async with hbone_env() as env, open_hbone_client() as client:
        seen: list[int] = []

        async def one(i: int) -> None:
            tunnel = await client.connect(
                env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
            )
            seen.append(client.statistics().connections)
            payload = os.urandom(50_000) + bytes([i])
            assert await _roundtrip(tunnel, payload) == payload
            await tunnel.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        stats = client.statistics()
        assert stats.dials == 1
        assert max(seen) == 1


async def test_pool_opens_a_second_connection_past_the_stream_limit() -> None:
    """With max 2 streams per connection, a third concurrent tunnel dials a new connection."""
    async with hbone_env() as env, open_hbone_client(
        ClientConfig(max_streams_per_connection=2)
    ) as client:
        tunnels = [
            await client.connect(
                env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
            )
            for _ in range(3)
        ]
        assert client.statistics().dials == 2
        for t in tunnels:
            await t.aclose()


async def test_idle_connection_is_dropped(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """A pooled connection with no tunnel for idle_timeout is closed and forgotten."""
    async with hbone_env() as env, open_hbone_client(
        ClientConfig(idle_timeout=30, keepalive=None)
    ) as client:
        tunnel = await client.connect(
            env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
        )
        await _roundtrip(tunnel, b"x")
        await tunnel.aclose()
        assert client.statistics().connections == 1
        for _ in range(40):
            await trio.sleep(1)
            await trio.testing.wait_all_tasks_blocked()
        assert client.statistics().connections == 0


async def test_wrong_server_identity_names_both() -> None:
    """Expecting another identity fails after the handshake, naming found and expected IDs."""
    want = certs.sa("reviews", "shop")
    async with hbone_env() as env, open_hbone_client() as client:
        with pytest.raises(HboneHandshakeError) as info:
            await client.connect(env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [want])
    message = str(info.value)
    assert str(SERVER.identity) in message and str(want) in message
    assert info.value.found == (SERVER.identity,)


async def test_untrusted_server_issuer_fails() -> None:
    """A server whose leaf was signed by an unknown root fails the client's verification."""
    import datetime as dt

    rogue = pki.new_root("cluster.local", lifetime=dt.timedelta(days=1), now=certs.NOW)
    bad = certs.credentials(SERVER.identity, issuer=rogue)
    async with hbone_env(bad) as env, open_hbone_client() as client:
        with pytest.raises(HboneHandshakeError, match="certificate verify failed"):
            await client.connect(
                env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
            )


async def test_expired_client_certificate_is_refused() -> None:
    """A client with an expired leaf cannot open a tunnel (the server rejects the handshake)."""
    import datetime as dt

    old = certs.NOW - dt.timedelta(days=3)
    expired = certs.credentials(CLIENT.identity, now=old, lifetime=dt.timedelta(hours=1))
    async with hbone_env() as env, open_hbone_client() as client:
        with pytest.raises((ConnectionLostError, HboneHandshakeError)):
            await client.connect(
                env.hbone_addr, f"127.0.0.1:{env.echo_port}", expired, [SERVER.identity]
            )
        assert env.requests == []


@pytest.mark.parametrize(
    ("who", "authority", "status"),
    [
        pytest.param("client", "127.0.0.1:{echo}", 200, id="allowed"),
        pytest.param("denied", "127.0.0.1:{echo}", 401, id="denied by handle_connect"),
        pytest.param("client", "127.0.0.1:{closed}", 503, id="upstream unreachable"),
        pytest.param("client", "no-port", 400, id="authority without port"),
    ],
)
async def test_connect_status(who: str, authority: str, status: int) -> None:
    """handle_connect's decision and malformed authorities map to 200/401/503/400."""
    creds = {"client": CLIENT, "denied": DENIED}[who]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    async with hbone_env() as env, open_hbone_client() as client:
        target = authority.format(echo=env.echo_port, closed=closed_port)
        if status == 200:
            tunnel = await client.connect(env.hbone_addr, target, creds, [SERVER.identity])
            await tunnel.aclose()
            return
        with pytest.raises(HboneStatusError) as info:
            await client.connect(env.hbone_addr, target, creds, [SERVER.identity])
        assert info.value.status == status


async def _raw_h2(env: Env):  # type: ignore[no-untyped-def]
    """A TLS connection to the HBONE server driven by the independent `h2` library."""
    import h2.config
    import h2.connection

    from meshcore.hbone_trio.tls_stream import TlsStream

    tls = TlsStream(
        await trio.open_tcp_stream(*env.hbone_addr),
        tlsconfig.client_context(CLIENT),
        server_side=False,
    )
    await tls.do_handshake()
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2c.initiate_connection()
    return tls, h2c


async def test_non_connect_method_gets_400_and_the_stream_closes() -> None:
    """A GET (sent by the h2 library) is answered 400 with END_STREAM; CONNECT still works."""
    import h2.events

    async with hbone_env() as env:
        tls, h2c = await _raw_h2(env)
        h2c.send_headers(
            1, [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x:1")]
        )
        h2c.send_headers(3, [(":method", "CONNECT"), (":authority", f"127.0.0.1:{env.echo_port}")])
        await tls.send_all(h2c.data_to_send())
        statuses: dict[int, bytes] = {}
        ended: set[int] = set()
        with trio.fail_after(5):
            while 1 not in ended or 3 not in statuses:
                for event in h2c.receive_data(bytes(await tls.receive_some())):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = dict(event.headers)[b":status"]
                    if isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                await tls.send_all(h2c.data_to_send())
        assert statuses == {1: b"400", 3: b"200"}
        await tls.aclose()


async def test_garbage_on_one_connection_leaves_others_flowing() -> None:
    """Garbage bytes and malformed HTTP/2 close only their own connections."""
    async with hbone_env() as env, open_hbone_client() as client:
        tunnel = await client.connect(
            env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
        )
        # 1. Not TLS at all.
        junk = await trio.open_tcp_stream(*env.hbone_addr)
        await junk.send_all(b"GET / HTTP/1.1\r\n\r\n" + os.urandom(1000))
        with trio.fail_after(5):
            with contextlib.suppress(trio.BrokenResourceError):
                while await junk.receive_some(1000):
                    pass
        await junk.aclose()
        # 2. Valid TLS, then malformed HTTP/2 (a preface followed by garbage frames).
        async with open_hbone_client() as other:
            victim = await other.connect(
                env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
            )
            bad_conn = other.connections()[0]
            await bad_conn.tls.send_all(b"\x00\x00\x04\x09\x00\x00\x00\x00\x07" + b"\xff" * 4)
            with pytest.raises(trio.BrokenResourceError):
                with trio.fail_after(5):
                    await victim.receive_some()
        payload = os.urandom(1 << 20)
        assert await _roundtrip(tunnel, payload) == payload


async def test_goaway_stops_new_streams_on_that_connection() -> None:
    """After a GOAWAY the pool dials a fresh connection; tunnels already open keep working."""
    from meshcore.hbone import frames

    async with hbone_env() as env, open_hbone_client() as client:
        first = await client.connect(
            env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
        )
        conn = client.connections()[0]
        # Feed the client core a GOAWAY frame as the server would send when draining.
        goaway = frames.goaway_frame(first.stream_id, hbone.ErrorCode.NO_ERROR)
        for event in conn.core.receive_data(goaway):
            conn._dispatch(event)  # inject like the reader task does
        assert not conn.usable
        second = await client.connect(
            env.hbone_addr, f"127.0.0.1:{env.echo_port}", CLIENT, [SERVER.identity]
        )
        assert client.statistics().dials == 2
        assert await _roundtrip(second, b"b") == b"b"
        assert await _roundtrip(first, b"a") == b"a"


async def test_connect_gives_up_when_the_response_never_comes(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """A peer that never answers the CONNECT makes connect() fail after response_timeout."""
    from meshcore.hbone_trio import HboneConnectError

    async def never(request: ConnectRequest) -> ConnectOutcome:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(serve_hbone, listeners, lambda local: SERVER, never)
        address = ("127.0.0.1", listeners[0].socket.getsockname()[1])
        config = ClientConfig(response_timeout=5, keepalive=None)
        async with open_hbone_client(config) as client:
            with pytest.raises(HboneConnectError, match="did not answer"):
                await client.connect(address, "10.0.0.1:80", CLIENT, [SERVER.identity])
        nursery.cancel_scope.cancel()


async def test_server_presents_the_certificate_of_the_dialed_address() -> None:
    """credentials_for(local_addr) picks the identity: each listener serves its own pod's cert."""
    other = certs.cached("reviews", "shop")
    env = Env()
    async with trio.open_nursery() as nursery:
        echo = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        env.echo_port = echo[0].socket.getsockname()[1]
        first = await trio.open_tcp_listeners(0, host="127.0.0.1")
        second = await trio.open_tcp_listeners(0, host="127.0.0.2")
        by_host = {"127.0.0.1": SERVER, "127.0.0.2": other}
        seen: list[tuple[str, int]] = []

        def credentials_for(local: tuple[str, int]) -> tlsconfig.WorkloadCredentials:
            seen.append(local)
            return by_host[local[0]]

        await nursery.start(serve_hbone, first + second, credentials_for, env.handle_connect)
        async with open_hbone_client() as client:
            for listener, creds in ((first[0], SERVER), (second[0], other)):
                address = listener.socket.getsockname()[:2]
                tunnel = await client.connect(
                    address, f"127.0.0.1:{env.echo_port}", CLIENT, [creds.identity]
                )
                assert await _roundtrip(tunnel, b"hi") == b"hi"
        assert [host for host, _ in seen] == ["127.0.0.1", "127.0.0.2"]
        nursery.cancel_scope.cancel()


async def test_serve_here_hands_the_tunnel_itself_to_the_handler() -> None:
    """`ConnectOutcome.serve_here`: 200, then the handler speaks on the tunnel (no upstream,
    no relay); the tunnel closes cleanly when it returns."""

    async def handle_connect(request: ConnectRequest) -> ConnectOutcome:
        async def shout(tunnel: TunnelStream) -> None:
            while data := await tunnel.receive_some():
                await tunnel.send_all(bytes(data).upper())

        return ConnectOutcome.serve_here(shout, [("x-served", "here")])

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(serve_hbone, listeners, lambda local: SERVER, handle_connect)
        addr = ("127.0.0.1", listeners[0].socket.getsockname()[1])
        async with open_hbone_client() as client:
            tunnel = await client.connect(addr, "10.0.0.1:80", CLIENT, [SERVER.identity])
            assert tunnel.response is not None
            assert ("x-served", "here") in tunnel.response.headers
            assert await _roundtrip(tunnel, b"hello tunnel") == b"HELLO TUNNEL"
            await tunnel.aclose()
        nursery.cancel_scope.cancel()


async def test_a_200_outcome_carries_exactly_one_way_to_serve_it() -> None:
    """200 needs an upstream or a terminate handler, not both and not neither."""

    async def serve(tunnel: TunnelStream) -> None:
        pass

    upstream = trio.testing.memory_stream_pair()[0]
    with pytest.raises(ValueError, match="exactly one"):
        ConnectOutcome(200)
    with pytest.raises(ValueError, match="exactly one"):
        ConnectOutcome(200, upstream, terminate=serve)
    with pytest.raises(ValueError, match="exactly one"):
        ConnectOutcome(401, terminate=serve)
    assert ConnectOutcome.serve_here(serve).status == 200
