"""ztunnel's ZDS client (trio): learns enrolled pods from the node agent and runs their proxies.

Who calls it: ztunnel's main, `await nursery.start(manager.run)`; readiness waits on
`wait_ready()`; the admin endpoint reads `statistics()` / `pods()`. It hands each pod to the
injected `PodProxyFactory` (`ztunnel.inpod.pod`) through the table in `ztunnel.inpod.proxies`.

Behaviour (AMBIENT-INTERNALS §5.5, ztunnel's `workloadmanager.rs`):
- Connects to the agent's unix SOCK_SEQPACKET socket (`config.socket_path`), sends Hello V1, then
  processes requests strictly one at a time: decode (`meshcore.zds.codec`), classify, `step()` the
  pure session table (`protocol_state`), carry out its actions, send exactly one reply.
- ACK an Add only once the pod's proxy reported its listeners bound; NACK "failure to start
  proxy …" otherwise, keep the pod pending and retry it every `retry_interval` while the
  connection stays up (a proxy that fails later turns pending too and arms the same timer).
- When the agent goes away (EOF, reset, refused, missing socket) the pods keep being served and
  we reconnect with back-off (10 ms doubling to 15 s, back to 10 ms after a session reached
  READY). Garbage or a protocol violation: NACK with the reason, close, reconnect; the agent then
  sends a fresh snapshot, after which pods not named are drained.
Invariants: the session task is the only writer of the proxy table; every fd received is either
handed to the table or closed before the next datagram is read; readiness is set once, after the
first SnapshotSent was processed, and stays set across reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from dataclasses import dataclass

import trio

from meshcore.zds import codec
from meshcore.zds.seqpacket import check_netns_fd, recv_datagram_async, send_datagram_async
from ztunnel.inpod import protocol_state as ps
from ztunnel.inpod.netns import NetnsSocketFactory
from ztunnel.inpod.pod import InpodError, PodInfo, PodProxyFactory
from ztunnel.inpod.proxies import PodProxies, PodState

log = logging.getLogger(__name__)

DEFAULT_ZDS_SOCKET = "/var/run/ztunnel/ztunnel.sock"


class ZdsSessionEnded(InpodError):
    """The ZDS connection ended (agent gone or protocol error); we reconnect."""


@dataclass(frozen=True)
class WorkloadManagerConfig:
    socket_path: str = DEFAULT_ZDS_SOCKET
    retry_interval: float = 5.0  # pending pods are retried this often while connected
    backoff_initial: float = 0.01
    backoff_max: float = 15.0
    start_timeout: float = 4.0  # below the agent's 5 s ack deadline
    drain_timeout: float = 5.0  # open connections of a removed pod get this long


@dataclass(frozen=True)
class WorkloadManagerStatistics:
    """Names follow ztunnel's `workload_manager_*` metrics (AMBIENT-INTERNALS §8.1)."""

    active_proxy_count: int
    pending_proxy_count: int
    proxies_started_total: int
    proxies_stopped_total: int
    draining_proxy_count: int
    connected: bool
    ready: bool
    connections_total: int
    protocol_errors_total: int


@dataclass(frozen=True)
class _Classified:
    event: ps.Event
    request: codec.Request | None = None
    fd: int | None = None  # the netns fd of an Add, still ours to hand over or close


class WorkloadManager:
    def __init__(self, factory: PodProxyFactory, sockets: NetnsSocketFactory,
                 config: WorkloadManagerConfig = WorkloadManagerConfig()) -> None:
        self.config = config
        self._factory = factory
        self._sockets = sockets
        self._proxies: PodProxies | None = None
        self._ready = trio.Event()
        self._changed = trio.lowlevel.ParkingLot()
        self._connected = False
        self._connections = 0
        self._protocol_errors = 0
        self._recv_scope: trio.CancelScope | None = None

    # ---- public ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve pods learnt over ZDS until cancelled; cancelling stops every pod proxy."""
        proxies: PodProxies | None = None
        try:
            async with trio.open_nursery() as nursery:
                proxies = PodProxies(nursery, self._factory, self._sockets,
                                     start_timeout=self.config.start_timeout,
                                     drain_timeout=self.config.drain_timeout,
                                     on_change=self._wake)
                self._proxies = proxies
                task_status.started()
                await self._connect_loop(proxies)
        finally:
            self._connected = False
            if proxies is not None:
                proxies.close_all_fds()

    @property
    def ready(self) -> bool:
        """True once the first snapshot from the agent has been processed."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Return once the first snapshot from the agent has been processed."""
        await self._ready.wait()

    async def wait_serving(self, uid: str) -> None:
        """Return once pod `uid` has a running proxy (listeners bound)."""
        while not (self._proxies and self._proxies.status(uid) is ps.PodStatus.SERVING):
            await self._changed.park()

    def _wake(self) -> None:
        """The proxy table changed: wake waiters; arm the retry timer if a pod turned pending."""
        self._changed.unpark_all()
        scope = self._recv_scope
        if scope is not None and scope.deadline == math.inf and self._proxies \
                and self._proxies.pending:
            scope.deadline = trio.current_time() + self.config.retry_interval

    async def wait_drained(self) -> None:
        """Return once no stopped proxy is still draining (its netns fd is then closed)."""
        while self._proxies and self._proxies.draining:
            await self._changed.park()

    def statistics(self) -> WorkloadManagerStatistics:
        p = self._proxies
        return WorkloadManagerStatistics(
            active_proxy_count=p.active if p else 0,
            pending_proxy_count=p.pending if p else 0,
            proxies_started_total=p.started_total if p else 0,
            proxies_stopped_total=p.stopped_total if p else 0,
            draining_proxy_count=p.draining if p else 0,
            connected=self._connected, ready=self._ready.is_set(),
            connections_total=self._connections, protocol_errors_total=self._protocol_errors)

    def pods(self) -> dict[str, PodState]:
        return self._proxies.states() if self._proxies else {}

    # ---- connection loop -------------------------------------------------------------------
    async def _connect_loop(self, proxies: PodProxies) -> None:
        backoff = self.config.backoff_initial
        while True:
            reached_ready = [False]
            try:
                await self._session(proxies, reached_ready)
            except (OSError, ZdsSessionEnded) as exc:
                if reached_ready[0]:
                    backoff = self.config.backoff_initial
                # Not reaching the agent yet is normal at startup: say so quietly.
                level = logging.WARNING if self._connected else logging.INFO
                log.log(level, "ZDS connection to %s: %s; retrying in %g s (pods keep being "
                        "served)", self.config.socket_path, exc, backoff)
            finally:
                self._connected = False
                self._changed.unpark_all()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.config.backoff_max)

    async def _session(self, proxies: PodProxies, reached_ready: list[bool]) -> None:
        """One connection, from connect to its end (always by an exception)."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        session = ps.Session()
        try:
            await sock.connect(self.config.socket_path)
            await send_datagram_async(sock, codec.encode_hello())
            self._connected = True
            self._connections += 1
            log.info("ZDS: connected to %s, hello sent", self.config.socket_path)
            next_retry = math.inf
            while True:
                if proxies.pending and next_retry == math.inf:
                    next_retry = trio.current_time() + self.config.retry_interval
                received: tuple[bytes, list[int]] | codec.ZdsProtocolError | None
                with trio.move_on_at(next_retry) as timer:
                    self._recv_scope = timer  # a proxy failing meanwhile arms the retry timer
                    try:
                        received = await recv_datagram_async(sock)
                    except codec.ZdsProtocolError as exc:  # truncated: garbage
                        received = exc
                    finally:
                        self._recv_scope = None
                if timer.cancelled_caught:
                    await proxies.retry_pending()
                    next_retry = math.inf
                    continue
                if received is None:
                    raise ZdsSessionEnded("the node agent closed the connection")
                item = self._classify(received, proxies)
                session = await self._handle(sock, session, item, proxies)
                if session.phase is ps.Phase.READY:
                    reached_ready[0] = True
        finally:
            sock.close()

    def _classify(self, received: tuple[bytes, list[int]] | codec.ZdsProtocolError,
                  proxies: PodProxies) -> _Classified:
        """Datagram + fds → table input; on any error every received fd is already closed."""
        if isinstance(received, codec.ZdsProtocolError):
            return _Classified(ps.Event(ps.Input.GARBAGE, detail=str(received)))
        data, fds = received
        try:
            request = codec.decode_request(data, len(fds))
            if isinstance(request, codec.AddWorkload):
                check_netns_fd(fds[0])
        except codec.ZdsProtocolError as exc:
            for fd in fds:
                os.close(fd)
            return _Classified(ps.Event(ps.Input.GARBAGE, detail=str(exc)))
        match request:
            case codec.AddWorkload(uid):
                inode = os.fstat(fds[0]).st_ino
                event = ps.Event(ps.Input.ADD, uid, proxies.status(uid, inode))
                return _Classified(event, request, fds[0])
            case codec.KeepWorkload(uid):
                return _Classified(ps.Event(ps.Input.KEEP, uid, proxies.status(uid)), request)
            case codec.DelWorkload(uid):
                return _Classified(ps.Event(ps.Input.DEL, uid, proxies.status(uid)), request)
            case _:
                return _Classified(ps.Event(ps.Input.SNAPSHOT_SENT), request)

    async def _handle(self, sock: trio.socket.SocketType, session: ps.Session,
                      item: _Classified, proxies: PodProxies) -> ps.Session:
        transition = ps.step(session, item.event)
        fd = item.fd
        try:
            for action in transition.actions:
                match action:
                    case ps.StartProxy() | ps.ReplaceProxy():
                        assert isinstance(item.request, codec.AddWorkload) and fd is not None
                        add, owned, fd = item.request, fd, None
                        info = PodInfo(add.uid, add.name, add.namespace, add.service_account,
                                       os.fstat(owned).st_ino)
                        await self._reply(sock, await proxies.start(info, owned))
                    case ps.KeepProxy():
                        log.debug("pod %s already served from this netns; ack", action.uid)
                        if fd is not None:
                            duplicate, fd = fd, None
                            os.close(duplicate)  # before the ack: the agent may count fds
                    case ps.StopProxy(uid):
                        await proxies.stop(uid)
                    case ps.StopUnnamed(named):
                        await proxies.stop_unnamed(named)
                    case ps.MarkReady():
                        if not self._ready.is_set():
                            log.info("ZDS: first snapshot processed; in-pod proxies ready")
                        self._ready.set()
                    case ps.SendAck():
                        await self._reply(sock, "")
                    case ps.SendNack(reason):
                        self._protocol_errors += 1
                        log.warning("ZDS protocol error from the node agent: %s", reason)
                        with contextlib.suppress(OSError):  # best effort: we close anyway
                            await self._reply(sock, reason)
                    case ps.Disconnect(reason):
                        raise ZdsSessionEnded(f"closing the connection: {reason}")
        finally:
            if fd is not None:
                os.close(fd)  # an Add we did not get to (disconnect, cancellation)
        return transition.session

    async def _reply(self, sock: trio.socket.SocketType, error: str) -> None:
        await send_datagram_async(sock, codec.encode_response(codec.Ack(error)))
