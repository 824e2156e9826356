"""Test helper: a scripted ztunnel speaking ZDS to the agent (trio, real SOCK_SEQPACKET socket).

`ScriptedZtunnel.connect(path)` connects and sends the hello; `expect()` returns the next request
(checked by a `ZdsSession(Role.ZTUNNEL)`, so the agent must follow the protocol) with the inode
of the netns fd that came with an AddWorkload (the fd itself is closed); `ack(error)` answers.
`receive_snapshot()` collects the snapshot's AddWorkloads up to SnapshotSent, acking each.
"""

from __future__ import annotations

import os
import socket

import trio

from meshcore.zds import codec
from meshcore.zds.seqpacket import check_netns_fd, recv_datagram_async, send_datagram_async
from meshcore.zds.session import Role, ZdsSession

TIMEOUT = 10.0


class ScriptedZtunnel:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.session = ZdsSession(Role.ZTUNNEL)
        self.kept: list[str] = []  # uids named by KeepWorkload in the last snapshot

    @classmethod
    async def connect(cls, path: str) -> ScriptedZtunnel:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        await sock.connect(path)
        peer = cls(sock)
        await send_datagram_async(sock, peer.session.send(codec.Hello()))
        return peer

    async def expect(self) -> tuple[codec.Request, int | None]:
        """The next request and the inode of its netns fd (None when no fd came)."""
        with trio.fail_after(TIMEOUT):
            received = await recv_datagram_async(self.sock)
        if received is None:
            raise EOFError("the agent closed the ZDS connection")
        data, fds = received
        try:
            message = self.session.receive(data, len(fds))
            inode = None
            for fd in fds:
                check_netns_fd(fd)
                inode = os.fstat(fd).st_ino
        finally:
            for fd in fds:
                os.close(fd)
        assert not isinstance(message, (codec.Hello, codec.Ack))
        return message, inode

    async def ack(self, error: str = "") -> None:
        await send_datagram_async(self.sock, self.session.send(codec.Ack(error)))

    async def receive_snapshot(self) -> dict[str, int | None]:
        """uid → netns inode for every AddWorkload of the snapshot (each acked); the uids of
        KeepWorkloads go to `kept`."""
        pods: dict[str, int | None] = {}
        self.kept = []
        while True:
            message, inode = await self.expect()
            await self.ack()
            if isinstance(message, codec.SnapshotSent):
                return pods
            if isinstance(message, codec.KeepWorkload):
                self.kept.append(message.uid)
                continue
            assert isinstance(message, codec.AddWorkload), message
            pods[message.uid] = inode

    async def wait_closed(self) -> bool:
        """True when the agent closed the connection (EOF) within the timeout."""
        with trio.fail_after(TIMEOUT):
            return await recv_datagram_async(self.sock) is None

    def close(self) -> None:
        self.sock.close()
