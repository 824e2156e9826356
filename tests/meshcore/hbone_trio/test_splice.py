"""The splice fast path (tunnel <-> plain socket): back-pressure, order, counters, nowait TLS."""

from __future__ import annotations

import os
import random
import socket

import pytest
import trio
import trio.testing

from meshcore.hbone import HboneSettings
from meshcore.hbone_trio.rawsock import raw_socket
from meshcore.hbone_trio.relay import RelayResult, relay
from meshcore.hbone_trio.splice import can_splice
from meshcore.hbone_trio.tls_stream import TlsStream
from tests.meshcore.hbone_trio import certs
from tests.meshcore.hbone_trio.pair import CACHE, connection_pair, tunnel_pair

pytestmark = pytest.mark.trio

SMALL_WINDOWS = HboneSettings(
    initial_stream_window=65_535, initial_connection_window=65_535, max_frame_size=16_384
)


def _sockets(sndbuf: int | None = None) -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    if sndbuf is not None:
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    return trio.SocketStream(a), trio.SocketStream(b)


async def _collect(out: list[RelayResult], coro) -> None:  # type: ignore[no-untyped-def]
    out.append(await coro)


async def test_relay_picks_the_splice_for_a_tunnel_and_a_socket_only() -> None:
    """A tunnel with a SocketStream splices (either order); two sockets use the copy loops."""
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, _s = await tunnel_pair(client, accepted)
        x, y = _sockets()
        assert can_splice(c, x) and can_splice(y, c)
        assert not can_splice(x, y)
        send, _recv = trio.testing.memory_stream_pair()
        assert not can_splice(c, send)
        nursery.cancel_scope.cancel()


async def test_slow_app_reader_gets_every_byte_in_order_with_back_pressure() -> None:
    """An app that reads slowly in odd sizes gets 3 MiB byte-exact; meanwhile flow control
    holds the sender back (the tunnel buffers at most one stream window unacknowledged)."""
    payload = os.urandom(3 << 20)
    app, proxy_side = _sockets(sndbuf=16_384)
    results: list[RelayResult] = []
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery, settings=SMALL_WINDOWS)
        c, s = await tunnel_pair(client, accepted)
        sent = trio.Event()

        async def far_end() -> None:
            await s.send_all(payload)
            await s.send_eof()
            sent.set()

        async with trio.open_nursery() as inner:
            inner.start_soon(_collect, results, relay(proxy_side, c))
            inner.start_soon(far_end)
            await trio.testing.wait_all_tasks_blocked()
            # Nobody reads the app socket yet: the sender must be stuck on flow control.
            assert not sent.is_set()
            assert c._queued <= SMALL_WINDOWS.initial_stream_window
            got = bytearray()
            rng = random.Random(7)
            while chunk := await app.receive_some(rng.randint(1, 70_000)):
                got += chunk
                if rng.random() < 0.05:
                    await trio.testing.wait_all_tasks_blocked()
            assert bytes(got) == payload
            await app.send_eof()
        nursery.cancel_scope.cancel()
    assert results == [RelayResult(a_to_b=0, b_to_a=len(payload))]


async def test_counters_follow_argument_order_tunnel_first() -> None:
    """relay(tunnel, socket) counts tunnel->socket as a_to_b, like the generic relay."""
    app, proxy_side = _sockets()
    up, down = os.urandom(300_000), os.urandom(200_000)
    results: list[RelayResult] = []
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, s = await tunnel_pair(client, accepted)

        async def far_end() -> None:
            await s.send_all(down)
            await s.send_eof()
            got = bytearray()
            while chunk := await s.receive_some():
                got += chunk
            assert got == up

        async with trio.open_nursery() as inner:
            inner.start_soon(_collect, results, relay(c, proxy_side))
            inner.start_soon(far_end)
            await app.send_all(up)
            await app.send_eof()
            got = bytearray()
            while chunk := await app.receive_some():
                got += chunk
            assert got == down
        nursery.cancel_scope.cancel()
    assert results == [RelayResult(a_to_b=len(down), b_to_a=len(up))]


async def test_many_small_messages_round_trip_in_order() -> None:
    """500 request/response exchanges of varied small sizes through the splice stay exact."""
    app, proxy_side = _sockets()
    rng = random.Random(3)
    async with trio.open_nursery() as nursery:
        client, _server, accepted = await connection_pair(nursery)
        c, s = await tunnel_pair(client, accepted)
        nursery.start_soon(relay, proxy_side, c)
        for _ in range(500):
            message = os.urandom(rng.randint(1, 3000))
            await app.send_all(message)
            got = bytearray()
            while len(got) < len(message):
                got += await s.receive_some()
            assert got == message
            await s.send_all(message[::-1])
            got = bytearray()
            while len(got) < len(message):
                got += await app.receive_some()
            assert got == message[::-1]
        nursery.cancel_scope.cancel()


async def test_send_many_nowait_keeps_what_the_socket_refused_in_order() -> None:
    """With a full socket, send_many_nowait returns False; the next send_many writes the rest
    first, so the peer decrypts every byte in order."""
    a, b = trio.socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    client = TlsStream(trio.SocketStream(a), CACHE.client(certs.cached("client")),
                       server_side=False)
    server = TlsStream(trio.SocketStream(b), CACHE.server(certs.cached("server")),
                       server_side=True)
    assert raw_socket(client.transport) is not None
    async with trio.open_nursery() as hs:
        hs.start_soon(client.do_handshake)
        hs.start_soon(server.do_handshake)
    first, second = os.urandom(1 << 20), os.urandom(100_000)
    assert client.can_send_nowait
    assert client.send_many_nowait([b"head", first]) is False
    assert client.has_unsent
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            await client.send_many([second])
            await client.send_many([b"!"])

        nursery.start_soon(sender)
        while len(got) < 4 + len(first) + len(second) + 1:
            got += await server.receive_some()
    assert bytes(got) == b"head" + first + second + b"!"
    assert not client.has_unsent
    await client.aclose()
    await server.aclose()
