"""Test helper: an HBONE client/server connection pair over a real TLS socketpair."""

from __future__ import annotations

import trio

from meshcore import hbone, tlsconfig
from meshcore.hbone import Role
from meshcore.hbone_trio.connection import HboneTrioConnection, KeepaliveConfig
from meshcore.hbone_trio.tls_stream import TlsStream
from meshcore.hbone_trio.tunnel import TunnelStream
from tests.meshcore.hbone_trio import certs

CACHE = tlsconfig.TlsContextCache()


async def connection_pair(
    nursery: trio.Nursery,
    *,
    keepalive: KeepaliveConfig | None = None,
    settings: hbone.HboneSettings | None = None,
) -> tuple[HboneTrioConnection, HboneTrioConnection, trio.MemoryReceiveChannel[TunnelStream]]:
    """Client and server connections running in `nursery`; accepted tunnels (answered 200)
    arrive on the returned channel."""
    a, b = trio.socket.socketpair()
    client_tls = TlsStream(
        trio.SocketStream(a), CACHE.client(certs.cached("client")), server_side=False
    )
    server_tls = TlsStream(
        trio.SocketStream(b), CACHE.server(certs.cached("server")), server_side=True
    )
    async with trio.open_nursery() as hs:
        hs.start_soon(client_tls.do_handshake)
        hs.start_soon(server_tls.do_handshake)
    send, recv = trio.open_memory_channel[TunnelStream](100)

    async def accept(tunnel: TunnelStream) -> None:
        await tunnel.respond(200)
        await send.send(tunnel)

    server: HboneTrioConnection

    def on_request(tunnel: TunnelStream, event: hbone.RequestReceived) -> None:
        server.start_soon(accept, tunnel)

    client = HboneTrioConnection(
        client_tls, Role.CLIENT, keepalive=keepalive, settings=settings, label="client"
    )
    server = HboneTrioConnection(
        server_tls,
        Role.SERVER,
        keepalive=keepalive,
        settings=settings,
        on_request=on_request,
        label="server",
    )
    await nursery.start(client.run)
    await nursery.start(server.run)
    return client, server, recv


async def tunnel_pair(
    client: HboneTrioConnection, accepted: trio.MemoryReceiveChannel[TunnelStream]
) -> tuple[TunnelStream, TunnelStream]:
    """Open one CONNECT tunnel and return (client end, server end) after the 200."""
    tunnel = client.open_tunnel_nowait("10.0.0.1:80")
    response = await tunnel.wait_response()
    assert response.status == 200
    return tunnel, await accepted.receive()
