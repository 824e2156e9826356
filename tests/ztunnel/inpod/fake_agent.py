"""A test stand-in for the node agent's ZDS side, built on `meshcore.zds` over a real socket.

It listens on a unix SOCK_SEQPACKET path like the agent, accepts ztunnel's connections, and lets a
test send requests (with real netns fds) one at a time and read the acks. Deliberately simple and
strict (asserts the hello), so tests see exactly what ztunnel put on the wire.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence

import trio

from meshcore.zds import codec
from meshcore.zds.seqpacket import recv_datagram_async, send_datagram_async


class AgentConnection:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def expect_hello(self) -> None:
        received = await recv_datagram_async(self.sock)
        assert received is not None, "ztunnel closed before sending its hello"
        data, fds = received
        assert codec.decode_hello(data, len(fds)) == codec.Hello(1)

    async def request(self, message: codec.Request, fds: Sequence[int] = ()) -> codec.Ack:
        """Send one request (with `fds`) and return ztunnel's answer."""
        await send_datagram_async(self.sock, codec.encode_request(message), fds)
        return await self.response()

    async def send_raw(self, data: bytes, fds: Sequence[int] = ()) -> None:
        await send_datagram_async(self.sock, data, fds)

    async def response(self) -> codec.Ack:
        received = await recv_datagram_async(self.sock)
        assert received is not None, "ztunnel closed the connection instead of answering"
        data, fds = received
        return codec.decode_response(data, len(fds))

    async def add(self, uid: str, name: str, netns_path: str) -> codec.Ack:
        """AddWorkload with a fresh fd of the namespace at `netns_path` (closed afterwards)."""
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return await self.request(codec.AddWorkload(uid, name, "ns1", f"{name}-sa"), [fd])
        finally:
            os.close(fd)

    async def snapshot(self, pods: Sequence[tuple[str, str, str]]) -> list[codec.Ack]:
        """Add each (uid, name, netns path), then SnapshotSent; every ack in order."""
        acks = [await self.add(uid, name, path) for uid, name, path in pods]
        acks.append(await self.request(codec.SnapshotSent()))
        return acks

    async def expect_closed(self) -> None:
        """ztunnel closes the connection (EOF)."""
        assert await recv_datagram_async(self.sock) is None

    def close(self) -> None:
        self.sock.close()


class FakeAgent:
    """Listens on `path`; `accept()` returns the next ztunnel connection after its hello."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener: trio.socket.SocketType | None = None

    async def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a previous "agent" left its socket file
        self.listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        await self.listener.bind(self.path)
        self.listener.listen(4)

    async def accept(self) -> AgentConnection:
        assert self.listener is not None
        sock, _ = await self.listener.accept()
        conn = AgentConnection(sock)
        await conn.expect_hello()
        return conn

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if os.path.exists(self.path):
            os.unlink(self.path)
