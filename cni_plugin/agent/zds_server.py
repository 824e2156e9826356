"""The node agent's ZDS server (trio): hands enrolled pods' netns fds to ztunnel.

ztunnel connects to a unix SOCK_SEQPACKET socket (default `/var/run/ztunnel/ztunnel.sock`) and
sends `ZdsHello`; the agent answers with its snapshot (one `AddWorkload` + netns fd per known pod,
then one `KeepWorkload` per pod it serves but cannot find the netns of, waiting for each ack),
then `SnapshotSent`. Afterwards `add_workload` goes to the newest connection
and `del_workload` to all of them, one outstanding request per connection (acks correlate purely by
order). AMBIENT-INTERNALS §5.5.

Who calls it: the agent (`server.Agent` after installing rules, and on pod deletion). Messages are
encoded/decoded by `meshcore.zds.codec`; fds move with `meshcore.zds.seqpacket`.
Invariants: what may flow when is decided by `meshcore.zds.session.ZdsSession` (one per
connection); one task (the connection's reader) reads each socket and forwards acks to the
waiting request; a datagram nobody asked for, or anything `ZdsProtocolError` rejects, closes that
connection (fds that came with it are closed too); every request waits at most `ACK_TIMEOUT`.
The server owns a dup of each pod's netns fd until the pod is deleted. A snapshot and the
registration of a pod (`add_workload` / `del_workload`) exclude each other (`_snapshot_lock`),
so a pod added or deleted while a ztunnel is receiving its snapshot is either in that snapshot
or sent to that ztunnel afterwards, never lost. `on_snapshot(acks)` (optional) learns, after
each completed snapshot, which pod uids ztunnel acked (`Ack.ok`) or NACKed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from cni_plugin.errors import CniPluginError
from meshcore.zds import codec
from meshcore.zds.seqpacket import recv_datagram_async, send_datagram_async
from meshcore.zds.session import Role, ZdsSession

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 5.0
ACK_TIMEOUT = 5.0
DEFAULT_ZDS_SOCKET = "/var/run/ztunnel/ztunnel.sock"


class ZtunnelUnavailable(CniPluginError):
    """No ztunnel connected, or it did not acknowledge in time (retry later)."""


@dataclass
class _Connection:
    sock: trio.socket.SocketType
    session: ZdsSession = field(default_factory=lambda: ZdsSession(Role.AGENT))
    lock: trio.Lock = field(default_factory=trio.Lock)
    acks: tuple[trio.MemorySendChannel[codec.Ack], trio.MemoryReceiveChannel[codec.Ack]] = field(
        default_factory=lambda: trio.open_memory_channel[codec.Ack](1))
    closed: bool = False

    async def request(self, message: codec.Request, fds: list[int]) -> codec.Ack:
        async with self.lock:
            if self.closed:
                raise ZtunnelUnavailable("ztunnel connection closed")
            try:
                await send_datagram_async(self.sock, self.session.send(message), fds)
                with trio.move_on_after(ACK_TIMEOUT):
                    return await self.acks[1].receive()
                # Acks correlate by order only: a late ack would answer the next request.
                # Drop the connection (the reader sees EOF); ztunnel reconnects and resyncs.
                self.closed = True
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
                raise ZtunnelUnavailable(f"ztunnel did not ack {type(message).__name__} "
                                         f"within {ACK_TIMEOUT:g} s; connection dropped")
            except (OSError, trio.EndOfChannel, codec.ZdsError) as exc:
                raise ZtunnelUnavailable(f"ztunnel connection lost: {exc}") from None


class ZdsServer:
    """Known pods and live ztunnel connections; the one writer of both."""

    def __init__(self, on_snapshot: Callable[[Mapping[str, codec.Ack]], None] | None = None,
                 ) -> None:
        self._pods: dict[str, tuple[codec.AddWorkload, int]] = {}
        self._kept: set[str] = set()  # served pods whose netns the agent cannot find (Keep)
        self._connections: list[_Connection] = []
        self._snapshot_lock = trio.Lock()
        self._on_snapshot = on_snapshot

    @property
    def known_uids(self) -> frozenset[str]:
        """Pods the next snapshot would carry (AddWorkload or KeepWorkload)."""
        return frozenset(self._pods) | frozenset(self._kept)

    @property
    def connected(self) -> int:
        return len(self._connections)

    async def add_workload(self, add: codec.AddWorkload, netns_fd: int) -> codec.Ack:
        """Remember the pod (dup of `netns_fd`) and send it to the newest ztunnel."""
        async with self._snapshot_lock:
            self._kept.discard(add.uid)
            old = self._pods.pop(add.uid, None)
            if old is not None:
                os.close(old[1])
            fd = os.dup(netns_fd)
            self._pods[add.uid] = (add, fd)
            if not self._connections:
                raise ZtunnelUnavailable("no ztunnel is connected to the ZDS socket; is ztunnel "
                                         "running on this node?")
            conn = self._connections[-1]
            fd = os.dup(fd)  # ours: the registered one may be closed by a del meanwhile
        try:
            return await conn.request(add, [fd])
        finally:
            os.close(fd)

    async def keep_workload(self, uid: str) -> None:
        """Name the pod in every future snapshot with `KeepWorkload` (no netns fd): ztunnel keeps
        serving it although this agent lost track of its netns (after a restart). Nothing is
        sent now: Keep is valid in snapshots only; an `add_workload` later replaces it."""
        async with self._snapshot_lock:
            if uid not in self._pods:
                self._kept.add(uid)

    async def del_workload(self, uid: str) -> None:
        """Forget the pod and tell every connected ztunnel (best effort)."""
        async with self._snapshot_lock:
            self._kept.discard(uid)
            old = self._pods.pop(uid, None)
            if old is not None:
                os.close(old[1])
            connections = list(self._connections)
        for conn in connections:
            try:
                await conn.request(codec.DelWorkload(uid), [])
            except ZtunnelUnavailable as exc:
                log.warning("DelWorkload %s: %s", uid, exc)

    async def handle_connection(self, sock: trio.socket.SocketType) -> None:
        conn = _Connection(sock)
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                conn.session.receive(*_count(await _recv(sock)))
            acks: dict[str, codec.Ack] = {}
            async with self._snapshot_lock:
                for add, fd in list(self._pods.values()):
                    acks[add.uid] = await self._snapshot_step(conn, add, [fd])
                for uid in sorted(self._kept):
                    acks[uid] = await self._snapshot_step(conn, codec.KeepWorkload(uid), [])
                await self._snapshot_step(conn, codec.SnapshotSent(), [])
                self._connections.append(conn)
            log.info("ZDS snapshot of %d pod(s) sent to ztunnel", len(acks))
            if self._on_snapshot is not None:
                self._on_snapshot(acks)
            await self._read_acks(conn)
        except (codec.ZdsProtocolError, trio.TooSlowError, ConnectionError, EOFError) as exc:
            log.warning("closing ZDS connection: %s", exc or type(exc).__name__)
        finally:
            conn.closed = True
            if conn in self._connections:
                self._connections.remove(conn)
            conn.acks[0].close()
            sock.close()

    async def _snapshot_step(self, conn: _Connection, message: codec.Request,
                             fds: list[int]) -> codec.Ack:
        await send_datagram_async(conn.sock, conn.session.send(message), fds)
        with trio.fail_after(ACK_TIMEOUT):
            ack = conn.session.receive(*_count(await _recv(conn.sock)))
        assert isinstance(ack, codec.Ack)  # the session admits only acks here
        if not ack.ok:
            log.warning("ztunnel NACKed %s during snapshot: %s", type(message).__name__, ack.error)
        return ack

    async def _read_acks(self, conn: _Connection) -> None:
        while True:
            message = conn.session.receive(*_count(await _recv(conn.sock)))
            if isinstance(message, codec.Ack):  # the session admits nothing else now
                await conn.acks[0].send(message)


async def _recv(sock: trio.socket.SocketType) -> tuple[bytes, list[int]]:
    received = await recv_datagram_async(sock)
    if received is None:
        raise EOFError("ztunnel closed the connection")
    return received


def _count(received: tuple[bytes, list[int]]) -> tuple[bytes, int]:
    """Close any fds that came in (ztunnel never sends fds) and return (data, how many)."""
    data, fds = received
    for fd in fds:
        os.close(fd)
    return data, len(fds)


async def serve_zds(path: str, server: ZdsServer, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept ztunnel connections on SOCK_SEQPACKET `path` forever (a stale file is replaced)."""
    _prepare(path)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        await listener.bind(path)
        listener.listen(8)
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                sock, _ = await listener.accept()
                nursery.start_soon(server.handle_connection, sock)
                await trio.sleep(0.2)  # at most ~5 new connections per second, as Istio's agent
    finally:
        listener.close()


def _prepare(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)


__all__ = ["DEFAULT_ZDS_SOCKET", "ZdsServer", "ZtunnelUnavailable", "serve_zds"]
