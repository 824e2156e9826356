"""Open inbound connections of one pod, re-authorized whenever the policies may have changed.

Who calls it: the inbound handlers (`inbound`, `inbound_plaintext`) `register` each connection
once it is authorized and connected (with its `ConnectionAttributes` and the app-side socket),
and `unregister` it when it ends; the pod proxy runs `watch(config, local_workload)` for the
pod's lifetime. ztunnel's `PolicyWatcher` (AMBIENT-INTERNALS §2.4, §7.1) does the same.

On every snapshot whose policies or this pod's Workload differ from the previous one, each
tracked connection is evaluated again (`meshcore.authz.evaluate_in`) against the new snapshot,
with the destination replaced by the pod's current Workload (its `authorization_policies` may
have changed). A connection now denied is cut: its app socket is shut down and its waiters
woken (`_reset`), which ends the relay (the HBONE stream is reset, the plaintext client's
socket closed with RST) and the handler logs the access line; here we log "connection closed
due to policy change" naming the policy.

Invariants: the watcher never blocks the data path (it runs in its own task and only closes
sockets); a connection is closed at most once; entries of connections that ended without
`unregister` (a failure between accept and relay) are pruned when their socket is closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import struct
from collections.abc import Callable

import trio

from meshcore.authz import ConnectionAttributes, Decision, evaluate_in
from meshcore.wds import Snapshot, Workload
from ztunnel.proxy.context import SnapshotSource

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Tracked:
    """One open inbound connection: what it was authorized as, and its app-side socket."""

    attributes: ConnectionAttributes
    app: trio.SocketStream
    closed_by_policy: Decision | None = None
    done: bool = False  # unregistered (its relay ended) or closed by policy

    @property
    def is_open(self) -> bool:
        return not self.done and self.app.socket.fileno() != -1


class ConnectionTracker:
    """The pod's tracked inbound connections and the policy re-check."""

    def __init__(self, pod_label: str) -> None:
        self._label = pod_label
        self._open: set[Tracked] = set()
        self._changed = trio.lowlevel.ParkingLot()
        self.closed_by_policy_total = 0

    def __len__(self) -> int:
        return len(self._open)

    def register(self, attributes: ConnectionAttributes, app: trio.SocketStream) -> Tracked:
        entry = Tracked(attributes, app)
        self._open.add(entry)
        return entry

    def unregister(self, entry: Tracked) -> None:
        entry.done = True
        self._open.discard(entry)
        self._changed.unpark_all()

    async def wait_changed(self) -> None:
        """Wait until some connection ends (unregistered or closed by policy)."""
        await self._changed.park()

    def recheck(self, snapshot: Snapshot, local: Workload | None) -> list[Tracked]:
        """Close every connection `snapshot` now denies; returns those closed."""
        closed: list[Tracked] = []
        for entry in list(self._open):
            if not entry.is_open:
                self._open.discard(entry)
                continue
            if local is None:
                continue  # our pod vanished from the state: the manager will stop us
            attrs = dataclasses.replace(entry.attributes, destination=local)
            decision = evaluate_in(snapshot, attrs)
            if decision.allowed:
                continue
            entry.closed_by_policy = decision
            entry.done = True
            self._open.discard(entry)
            self.closed_by_policy_total += 1
            log.info(
                "connection closed due to policy change: %s (pod %s): %s",
                attrs, self._label, decision.rejection_error,
            )
            _reset(entry.app)
            closed.append(entry)
        if closed:
            self._changed.unpark_all()
        return closed

    async def watch(
        self, config: SnapshotSource, local_workload: Callable[[Snapshot], Workload | None]
    ) -> None:
        """Re-check on every relevant snapshot change, until cancelled."""
        last = config.current()
        last_local = local_workload(last)
        while True:
            snap = await config.wait_for(lambda s, prev=last: s is not prev)  # type: ignore[misc]
            local = local_workload(snap)
            if snap.policies is not last.policies or local != last_local:
                self.recheck(snap, local)
            last, last_local = snap, local


def _reset(stream: trio.SocketStream) -> None:
    """Cut the app side now, without closing the descriptor (the relay owns and closes it; the
    HBONE splice writes to it from the connection's reader until the relay detaches): RST on
    the eventual close (SO_LINGER 0), no more bytes either way (shutdown), and every task
    waiting on it woken with ClosedResourceError (notify_closing), which ends the relay."""
    sock = stream.socket
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
