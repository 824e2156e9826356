"""A pod's three in-pod listeners (15001 outbound, 15006 inbound plaintext, 15008 inbound HBONE).

`bind_pod_listeners(netns)` creates the listening sockets *inside the pod netns* on the netns
thread (`PodNetns.run`), each with SO_MARK 0x539 (the in-pod rules never redirect ztunnel's own
traffic), SO_REUSEPORT and backlog 128 as Istio's ztunnel does (AMBIENT-INTERNALS §1), and wraps
them as `trio.SocketListener`s. The inbound listeners (15006, 15008) also get IP_TRANSPARENT so
the inbound handlers may connect to the app with the client's address as source; `transparent`
in the result says whether the kernel allowed it. Addresses: `[::]` dual-stack (IPv4 arrives as
v4-mapped), or `0.0.0.0` when the netns has no IPv6.

`ListenerPodProxy` is a complete `PodProxy` (see `ztunnel.inpod.pod`) over those listeners: the
data-path owner supplies only `PodHandlers` (one async handler per listener, given the accepted
`trio.SocketStream`). It accepts on each listener, runs every connection in its own task, and on
`drain` closes the listeners first, then waits for open connections until the deadline, then
cancels them.

Invariants: either all three listeners are bound or none stays open (a failed bind closes the
ones already made and raises `ProxyStartError` naming the port); every accepted stream is closed
when its handler returns or fails; a handler's exception is logged, never propagated.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from ztunnel.inpod.netns import ZTUNNEL_MARK, new_socket
from ztunnel.inpod.pod import PodInfo, PodNetns, ProxyStartError

log = logging.getLogger(__name__)

OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
INBOUND_HBONE_PORT = 15008
LISTEN_BACKLOG = 128
_ACCEPT_PAUSE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

ConnectionHandler = Callable[[trio.SocketStream], Awaitable[None]]


@dataclass(frozen=True)
class PodPorts:
    outbound: int = OUTBOUND_PORT
    inbound_plaintext: int = INBOUND_PLAINTEXT_PORT
    inbound_hbone: int = INBOUND_HBONE_PORT


@dataclass(frozen=True)
class PodHandlers:
    """The data path of one pod: what to do with a connection accepted on each listener."""

    outbound: ConnectionHandler
    inbound_plaintext: ConnectionHandler
    inbound_hbone: ConnectionHandler


@dataclass(frozen=True)
class PodListeners:
    outbound: trio.SocketListener
    inbound_plaintext: trio.SocketListener
    inbound_hbone: trio.SocketListener
    transparent: bool  # IP_TRANSPARENT took on the inbound listeners

    def all(self) -> tuple[trio.SocketListener, ...]:
        return (self.outbound, self.inbound_plaintext, self.inbound_hbone)


def _bind_one(port: int, transparent: bool, backlog: int, reuse_port: bool,
              mark: int) -> tuple[socket.socket, bool]:
    """Runs on the netns thread: one listening socket, dual-stack if the netns has IPv6."""
    try:
        sock = new_socket(socket.AF_INET6, mark=mark)
        family_addr: tuple[str, int] = ("::", port)
    except OSError as exc:
        if exc.errno != errno.EAFNOSUPPORT:
            raise
        sock, family_addr = new_socket(socket.AF_INET, mark=mark), ("0.0.0.0", port)
    try:
        is_transparent = False
        if transparent:
            try:
                level, opt = ((socket.IPPROTO_IPV6, 75) if sock.family == socket.AF_INET6
                              else (socket.SOL_IP, 19))  # IPV6_TRANSPARENT / IP_TRANSPARENT
                sock.setsockopt(level, opt, 1)
                is_transparent = True
            except PermissionError:
                is_transparent = False  # no CAP_NET_ADMIN: serve without source preservation
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(family_addr)
        except OSError as exc:
            if sock.family != socket.AF_INET6 or exc.errno != errno.EADDRNOTAVAIL:
                raise
            sock.close()  # IPv6 disabled in this netns: fall back to IPv4 only
            return _bind_v4(port, is_transparent, backlog, reuse_port, mark)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock, is_transparent


def _bind_v4(port: int, transparent: bool, backlog: int, reuse_port: bool,
             mark: int) -> tuple[socket.socket, bool]:
    sock = new_socket(socket.AF_INET, mark=mark, transparent=transparent, reuse_port=reuse_port,
                      bind=("0.0.0.0", port), listen_backlog=backlog)
    return sock, transparent


def _bind_all(ports: PodPorts, backlog: int, reuse_port: bool,
              mark: int) -> tuple[list[socket.socket], bool]:
    """Runs on the netns thread: all three sockets, or none (closes what it made on failure)."""
    made: list[socket.socket] = []
    transparent = True
    try:
        for port, wants_transparent in ((ports.outbound, False),
                                        (ports.inbound_plaintext, True),
                                        (ports.inbound_hbone, True)):
            try:
                sock, ok = _bind_one(port, wants_transparent, backlog, reuse_port, mark)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on port {port} in the pod netns: "
                                         f"{exc.strerror or exc}") from None
            made.append(sock)
            transparent = transparent and (ok or not wants_transparent)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made, transparent


async def bind_pod_listeners(pod: PodInfo, netns: PodNetns, *, ports: PodPorts = PodPorts(),
                             backlog: int = LISTEN_BACKLOG, reuse_port: bool = True,
                             mark: int = ZTUNNEL_MARK) -> PodListeners:
    """Bind 15001/15006/15008 inside `netns`; raises ProxyStartError naming the failing port."""
    try:
        socks, transparent = await netns.run(_bind_all, ports, backlog, reuse_port, mark)
    except OSError as exc:
        raise ProxyStartError(pod, exc.strerror or str(exc)) from exc
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
    return PodListeners(listeners[0], listeners[1], listeners[2], transparent)


class ListenerPodProxy:
    """A `PodProxy` that serves `handlers` on the pod's three listeners."""

    def __init__(self, pod: PodInfo, netns: PodNetns, handlers: PodHandlers, *,
                 ports: PodPorts = PodPorts(), backlog: int = LISTEN_BACKLOG,
                 reuse_port: bool = True, mark: int = ZTUNNEL_MARK) -> None:
        self.pod = pod
        self.netns = netns
        self._handlers = handlers
        self._ports, self._backlog, self._reuse_port, self._mark = ports, backlog, reuse_port, mark
        self.listeners: PodListeners | None = None
        self._connections: trio.Nursery | None = None
        self._open = 0
        self._closed_one = trio.lowlevel.ParkingLot()
        self._drained = trio.Event()

    @property
    def open_connections(self) -> int:
        return self._open

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        self.listeners = await bind_pod_listeners(self.pod, self.netns, ports=self._ports,
                                                  backlog=self._backlog,
                                                  reuse_port=self._reuse_port, mark=self._mark)
        try:
            async with trio.open_nursery() as connections:
                self._connections = connections
                async with trio.open_nursery() as acceptors:
                    pairs = ((self.listeners.outbound, self._handlers.outbound),
                             (self.listeners.inbound_plaintext, self._handlers.inbound_plaintext),
                             (self.listeners.inbound_hbone, self._handlers.inbound_hbone))
                    for listener, handler in pairs:
                        acceptors.start_soon(self._accept_loop, listener, handler)
                    task_status.started()
                    await self._drained.wait()
                    acceptors.cancel_scope.cancel()
                connections.cancel_scope.cancel()
        finally:
            self._close_listeners()

    async def drain(self, deadline: float, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._close_listeners()
        task_status.started()
        try:
            with trio.move_on_at(deadline):
                while self._open:
                    await self._closed_one.park()
        finally:
            self._drained.set()  # serve() cancels what is left and returns

    def _close_listeners(self) -> None:
        if self.listeners is not None:
            for listener in self.listeners.all():
                listener.socket.close()  # wakes the accept() blocked on it

    async def _accept_loop(self, listener: trio.SocketListener,
                           handler: ConnectionHandler) -> None:
        assert self._connections is not None
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_PAUSE_ERRNOS:
                    raise
                log.warning("pod %s: accept failed (%s); pausing 100 ms", self.pod.display, exc)
                await trio.sleep(0.1)
                continue
            self._open += 1
            self._connections.start_soon(self._handle, handler, stream)

    async def _handle(self, handler: ConnectionHandler, stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        except Exception:
            log.exception("pod %s: connection handler failed", self.pod.display)
        finally:
            await trio.aclose_forcefully(stream)
            self._open -= 1
            self._closed_one.unpark_all()
