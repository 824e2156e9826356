"""ztunnel's side of one ZDS session as a state table (pure: no I/O, no trio).

Who calls it: `ztunnel.inpod.workload_manager`, once per datagram received from the node agent.
It classifies the datagram into an `Event` (input + the pod's current status in ztunnel's proxy
table), calls `step(session, event)` and carries out the returned actions in order.

States (one `Session` per connection; a new connection starts a new session):
- AWAIT_SNAPSHOT: the agent is sending its snapshot; uids named by Add / Keep are remembered.
- READY: SnapshotSent was processed; only Add / Del flow.

Rules (AMBIENT-INTERNALS §5.5; mirror of ztunnel's `statemanager.rs`):
1. Every request gets exactly one reply: `SendAck`, `SendNack`, or the outcome of `StartProxy` /
   `ReplaceProxy` (ACK once the proxy's listeners are bound, NACK "failure to start proxy …" if
   not, the pod then stays pending and is retried; the connection stays up).
2. Add of a pod already served from the same netns inode is idempotent (`KeepProxy`: close the
   fd that came with it, ACK). A different inode (sandbox recreated) → `ReplaceProxy`. A pending
   pod is started again at once with the new fd.
3. Del stops the pod's proxy (drain) or drops it from pending, and ACKs, also when unknown.
4. SnapshotSent in AWAIT_SNAPSHOT → `StopUnnamed` (drain every pod the snapshot did not name),
   `MarkReady`, ACK, READY.
5. Protocol errors → NACK with the reason, then `Disconnect` (the manager reconnects and expects
   a fresh snapshot): undecodable datagram (GARBAGE), Keep after the snapshot, a second
   SnapshotSent.
6. Del during the snapshot also un-names the pod, so `StopUnnamed` stops it if it was served.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Phase(enum.Enum):
    AWAIT_SNAPSHOT = "await_snapshot"
    READY = "ready"


class Input(enum.Enum):
    ADD = "add"
    KEEP = "keep"
    DEL = "del"
    SNAPSHOT_SENT = "snapshot_sent"
    GARBAGE = "garbage"


class PodStatus(enum.Enum):
    """The pod named by the request, as ztunnel's proxy table has it."""

    ABSENT = "absent"
    PENDING = "pending"  # known, proxy not running (start failed); we hold its netns fd
    SERVING = "serving"  # proxy running; for Add: from the same netns inode as the new fd
    SERVING_OTHER_NETNS = "serving_other_netns"  # Add only: running, but the inode differs


class Naming(enum.Enum):
    NONE = "none"
    NAME = "name"  # remember the uid as named by the snapshot
    UNNAME = "unname"


# ---- actions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartProxy:
    uid: str  # reply = ACK once started / NACK with the start error


@dataclass(frozen=True)
class ReplaceProxy:
    uid: str  # drain the running proxy, then as StartProxy


@dataclass(frozen=True)
class KeepProxy:
    uid: str  # already served from this netns: close the duplicate fd


@dataclass(frozen=True)
class StopProxy:
    uid: str  # drain a running proxy or drop a pending pod (closing its fd)


@dataclass(frozen=True)
class StopUnnamed:
    named: frozenset[str]  # drain / drop every pod whose uid is not in `named`


@dataclass(frozen=True)
class MarkReady:
    pass


@dataclass(frozen=True)
class SendAck:
    pass


@dataclass(frozen=True)
class SendNack:
    reason: str


@dataclass(frozen=True)
class Disconnect:
    reason: str


Action = (StartProxy | ReplaceProxy | KeepProxy | StopProxy | StopUnnamed | MarkReady | SendAck
          | SendNack | Disconnect)
REPLY_ACTIONS = (StartProxy, ReplaceProxy, SendAck, SendNack)


class Do(enum.Enum):
    """Action kinds as they appear in the table (instantiated by `step`)."""

    START = "start"
    REPLACE = "replace"
    KEEP = "keep"
    STOP = "stop"
    STOP_UNNAMED = "stop_unnamed"
    MARK_READY = "mark_ready"
    ACK = "ack"
    NACK_DISCONNECT = "nack_disconnect"


# ---- the table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    next_phase: Phase | None  # None: the session ends (disconnect)
    naming: Naming
    by_status: Mapping[PodStatus, tuple[Do, ...]]
    error: str = ""  # for NACK_DISCONNECT rows


def _same(*kinds: Do) -> Mapping[PodStatus, tuple[Do, ...]]:
    return {status: kinds for status in PodStatus}


_ON_ADD: Mapping[PodStatus, tuple[Do, ...]] = {
    PodStatus.ABSENT: (Do.START,),
    PodStatus.PENDING: (Do.START,),
    PodStatus.SERVING: (Do.KEEP, Do.ACK),
    PodStatus.SERVING_OTHER_NETNS: (Do.REPLACE,),
}
_ON_DEL: Mapping[PodStatus, tuple[Do, ...]] = {
    PodStatus.ABSENT: (Do.ACK,),
    PodStatus.PENDING: (Do.STOP, Do.ACK),
    PodStatus.SERVING: (Do.STOP, Do.ACK),
    PodStatus.SERVING_OTHER_NETNS: (Do.STOP, Do.ACK),
}
_AWAIT, _READY = Phase.AWAIT_SNAPSHOT, Phase.READY

TABLE: Mapping[tuple[Phase, Input], Row] = {
    (_AWAIT, Input.ADD): Row(_AWAIT, Naming.NAME, _ON_ADD),
    (_AWAIT, Input.KEEP): Row(_AWAIT, Naming.NAME, _same(Do.ACK)),
    (_AWAIT, Input.DEL): Row(_AWAIT, Naming.UNNAME, _ON_DEL),
    (_AWAIT, Input.SNAPSHOT_SENT): Row(_READY, Naming.NONE,
                                       _same(Do.STOP_UNNAMED, Do.MARK_READY, Do.ACK)),
    (_AWAIT, Input.GARBAGE): Row(None, Naming.NONE, _same(Do.NACK_DISCONNECT)),
    (_READY, Input.ADD): Row(_READY, Naming.NONE, _ON_ADD),
    (_READY, Input.KEEP): Row(None, Naming.NONE, _same(Do.NACK_DISCONNECT),
                              "KeepWorkload received after SnapshotSent (valid in snapshots only)"),
    (_READY, Input.DEL): Row(_READY, Naming.NONE, _ON_DEL),
    (_READY, Input.SNAPSHOT_SENT): Row(None, Naming.NONE, _same(Do.NACK_DISCONNECT),
                                       "SnapshotSent received twice on one connection"),
    (_READY, Input.GARBAGE): Row(None, Naming.NONE, _same(Do.NACK_DISCONNECT)),
}


# ---- stepping ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Session:
    phase: Phase = Phase.AWAIT_SNAPSHOT
    named: frozenset[str] = frozenset()
    ended: bool = False


@dataclass(frozen=True)
class Event:
    input: Input
    uid: str = ""
    status: PodStatus = PodStatus.ABSENT
    detail: str = ""  # for GARBAGE: what was wrong with the datagram


@dataclass(frozen=True)
class Transition:
    session: Session
    actions: tuple[Action, ...] = field(default_factory=tuple)


def step(session: Session, event: Event) -> Transition:
    """The session after `event` and the actions to carry out, in order."""
    if session.ended:
        raise ValueError("step() on an ended ZDS session; start a new Session per connection")
    row = TABLE[(session.phase, event.input)]
    named = session.named
    if row.naming is Naming.NAME:
        named = named | {event.uid}
    elif row.naming is Naming.UNNAME:
        named = named - {event.uid}
    actions: list[Action] = []
    for kind in row.by_status[event.status]:
        match kind:
            case Do.START:
                actions.append(StartProxy(event.uid))
            case Do.REPLACE:
                actions.append(ReplaceProxy(event.uid))
            case Do.KEEP:
                actions.append(KeepProxy(event.uid))
            case Do.STOP:
                actions.append(StopProxy(event.uid))
            case Do.STOP_UNNAMED:
                actions.append(StopUnnamed(named))
            case Do.MARK_READY:
                actions.append(MarkReady())
            case Do.ACK:
                actions.append(SendAck())
            case Do.NACK_DISCONNECT:
                reason = row.error or f"protocol error: {event.detail or 'invalid datagram'}"
                actions += [SendNack(reason), Disconnect(reason)]
    if row.next_phase is None:
        return Transition(Session(session.phase, frozenset(), ended=True), tuple(actions))
    if row.next_phase is Phase.READY:
        named = frozenset()  # only meaningful while the snapshot is being received
    return Transition(Session(row.next_phase, named), tuple(actions))
