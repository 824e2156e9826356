"""The asyncio xDS client adapter: connection-level behaviour (keepalive, re-dial)."""

from __future__ import annotations

import asyncio

import pytest

from meshcore.protos.envoy.config.core.v3 import Node
from meshcore.xds.client import Backoff, XdsClient, tcp_channel
from meshcore.xds.types import ZTUNNEL_TYPES, NodeId

NODE = Node(id=str(NodeId("ztunnel", "10.0.0.5", "ztunnel-abc", "istio-system")))


@pytest.mark.asyncio
async def test_keepalive_drops_a_silent_server_and_redials() -> None:
    """A server that accepts TCP but never answers is detected by PING and re-dialled."""
    accepted = asyncio.Queue[int]()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait(1)
        await reader.read()  # never writes a byte; returns when the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = XdsClient(
        tcp_channel("127.0.0.1", port, keepalive=0.05, keepalive_timeout=0.05),
        node=NODE, type_urls=ZTUNNEL_TYPES, handler=lambda delta: None,
        backoff=Backoff(initial=0.01, maximum=0.01),
    )
    task = asyncio.create_task(client.run())
    try:
        await accepted.get()
        await accepted.get()  # a second connection: the first was dropped
        assert client.statistics().disconnects >= 1
        assert client.statistics().responses == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        await server.wait_closed()
