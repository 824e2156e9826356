"""HboneTrioConnection and TunnelStream over a real TLS socketpair."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from meshcore.hbone import HboneSettings
from meshcore.hbone_trio import ConnectionLostError, KeepaliveConfig, StreamResetError
from tests.meshcore.hbone_trio.pair import connection_pair, tunnel_pair

pytestmark = pytest.mark.trio


async def test_tunnel_is_a_half_closeable_stream() -> None:
    """TunnelStream passes trio's half-closeable stream conformance suite over TLS + HTTP/2."""
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)

        async def maker():  # type: ignore[no-untyped-def]
            return await tunnel_pair(client, accepted)

        await trio.testing.check_half_closeable_stream(maker, None)
        nursery.cancel_scope.cancel()


async def test_bulk_both_ways_byte_exact_with_small_windows() -> None:
    """4 MiB each way arrives byte-exact even with 64 KiB windows (flow control waits)."""
    settings = HboneSettings(
        initial_stream_window=65_535, initial_connection_window=65_535, max_frame_size=16_384
    )
    up, down = os.urandom(4 << 20), os.urandom(4 << 20)
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery, settings=settings)
        c, s = await tunnel_pair(client, accepted)

        async def pump(src, dst, data: bytes, out: bytearray) -> None:  # type: ignore[no-untyped-def]
            async with trio.open_nursery() as inner:

                async def send() -> None:
                    for i in range(0, len(data), 100_000):
                        await src.send_all(data[i : i + 100_000])
                    await src.send_eof()

                inner.start_soon(send)
                while chunk := await dst.receive_some():
                    out += chunk

        got_up, got_down = bytearray(), bytearray()
        async with trio.open_nursery() as pumps:
            pumps.start_soon(pump, c, s, up, got_up)
            pumps.start_soon(pump, s, c, down, got_down)
        assert got_up == up
        assert got_down == down
        nursery.cancel_scope.cancel()


async def test_reset_reaches_the_peer_as_broken_stream() -> None:
    """reset() aborts the stream: the other end's receive raises StreamResetError (CANCEL)."""
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, s = await tunnel_pair(client, accepted)
        await c.reset()
        with pytest.raises(StreamResetError) as info:
            await s.receive_some()
        assert info.value.error_code == 8 and info.value.remote
        nursery.cancel_scope.cancel()


async def test_aclose_is_eof_then_reset_for_the_sender() -> None:
    """aclose() like a TCP close: the peer reads EOF, and its further sends fail."""
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, s = await tunnel_pair(client, accepted)
        await c.send_all(b"bye")
        await c.aclose()
        assert bytes(await s.receive_some()) == b"bye"
        assert bytes(await s.receive_some()) == b""
        with pytest.raises(StreamResetError):
            for _ in range(100):
                await s.send_all(b"x" * 1000)
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()


async def test_connection_loss_breaks_every_tunnel() -> None:
    """When the TLS connection dies, blocked receivers on all tunnels get ConnectionLostError."""
    async with trio.open_nursery() as nursery:
        client, server, accepted = await connection_pair(nursery)
        pairs = [await tunnel_pair(client, accepted) for _ in range(3)]
        errors: list[BaseException] = []

        async def wait(t):  # type: ignore[no-untyped-def]
            try:
                await t.receive_some()
            except ConnectionLostError as exc:
                errors.append(exc)

        async with trio.open_nursery() as waiters:
            for c, _ in pairs:
                waiters.start_soon(wait, c)
            await trio.testing.wait_all_tasks_blocked()
            await server.tls.transport.aclose()
        assert len(errors) == 3
        nursery.cancel_scope.cancel()


async def test_keepalive_pings_keep_an_idle_connection(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """With keepalive on, PINGs are acknowledged and an idle connection stays up."""
    async with trio.open_nursery() as nursery:
        client, _server, _accepted = await connection_pair(
            nursery, keepalive=KeepaliveConfig(interval=1, timeout=2)
        )
        # Real sockets under the autojump clock: time only jumps when every task is blocked.
        for _ in range(5):
            await trio.sleep(1)
            await trio.testing.wait_all_tasks_blocked()
        assert client._ping_acked.is_set()  # set only by PingAcknowledged
        assert not client.closed
        nursery.cancel_scope.cancel()


async def test_keepalive_drops_a_silent_peer(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """A peer that completes TLS but never answers PING is dropped after interval + timeout."""
    from meshcore.hbone import Role
    from meshcore.hbone_trio.connection import HboneTrioConnection
    from meshcore.hbone_trio.tls_stream import TlsStream
    from tests.meshcore.hbone_trio import certs
    from tests.meshcore.hbone_trio.pair import CACHE

    a, b = trio.socket.socketpair()
    c = TlsStream(trio.SocketStream(a), CACHE.client(certs.cached("client")), server_side=False)
    s = TlsStream(trio.SocketStream(b), CACHE.server(certs.cached("server")), server_side=True)
    async with trio.open_nursery() as hs:
        hs.start_soon(c.do_handshake)
        hs.start_soon(s.do_handshake)
    conn = HboneTrioConnection(c, Role.CLIENT, keepalive=KeepaliveConfig(interval=10, timeout=20))
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        start = trio.current_time()
        with trio.fail_after(60):
            await conn.wait_closed()
        assert trio.current_time() - start >= 30
        nursery.cancel_scope.cancel()
    await s.aclose()
