"""ZDS conversation rules as a table, sans-IO: which message may flow, in which state, which way.

One `ZdsSession` per connection, on either end (`Role.AGENT` or `Role.ZTUNNEL`). `send(message)`
returns the datagram to write (and checks that *we* follow the protocol); `receive(data, fds)`
decodes and checks that *the peer* does. The trio code around it only moves datagrams and fds.

Rules (AMBIENT-INTERNALS §5.5):
1. ztunnel speaks first with `Hello`; nothing else may flow before it.
2. Then the agent sends its snapshot: `AddWorkload`/`KeepWorkload` per known pod, then
   `SnapshotSent`. `KeepWorkload` is only valid in the snapshot.
3. After `SnapshotSent` is acked the session is READY: the agent sends `AddWorkload` /
   `DelWorkload` as pods come and go.
4. Strictly one request outstanding: every request is answered by exactly one `Ack` before the next
   request; an `Ack` with nothing outstanding is a violation. Acks correlate purely by order.
5. Only the agent sends requests; only ztunnel sends `Hello` and `Ack`.
A violation by the peer raises `ZdsProtocolError` (close the connection); a violation by us raises
`ZdsUsageError` (a bug in the caller). After either, the session is CLOSED and refuses everything.

Who calls it: `cni_plugin.agent.zds_server` (agent end) and ztunnel's in-pod manager (ztunnel end).
"""

from __future__ import annotations

import enum

from meshcore.zds import codec
from meshcore.zds.codec import ZdsError, ZdsProtocolError


class ZdsUsageError(ZdsError):
    """We tried to send something the protocol does not allow now (a bug in the caller)."""


class Role(enum.Enum):
    AGENT = "agent"
    ZTUNNEL = "ztunnel"


class State(enum.Enum):
    AWAIT_HELLO = "await-hello"
    SNAPSHOT = "snapshot"
    READY = "ready"
    CLOSED = "closed"


class Kind(enum.Enum):
    HELLO = "hello"
    ADD = "add"
    KEEP = "keep"
    DEL = "del"
    SNAPSHOT_SENT = "snapshot-sent"
    ACK = "ack"


# Who may send each kind (rule 5).
SENDER = {Kind.HELLO: Role.ZTUNNEL, Kind.ACK: Role.ZTUNNEL, Kind.ADD: Role.AGENT,
          Kind.KEEP: Role.AGENT, Kind.DEL: Role.AGENT, Kind.SNAPSHOT_SENT: Role.AGENT}

# (state, kind) -> state after the message, for messages allowed in that state (rules 1-3).
# Acks move SNAPSHOT to READY only when they answer SnapshotSent (handled in `_advance`).
TRANSITIONS: dict[tuple[State, Kind], State] = {
    (State.AWAIT_HELLO, Kind.HELLO): State.SNAPSHOT,
    (State.SNAPSHOT, Kind.ADD): State.SNAPSHOT,
    (State.SNAPSHOT, Kind.KEEP): State.SNAPSHOT,
    (State.SNAPSHOT, Kind.SNAPSHOT_SENT): State.SNAPSHOT,
    (State.SNAPSHOT, Kind.ACK): State.SNAPSHOT,
    (State.READY, Kind.ADD): State.READY,
    (State.READY, Kind.DEL): State.READY,
    (State.READY, Kind.ACK): State.READY,
}

REQUESTS = frozenset({Kind.ADD, Kind.KEEP, Kind.DEL, Kind.SNAPSHOT_SENT})

Message = codec.Hello | codec.Request | codec.Ack


def kind_of(message: Message) -> Kind:
    return {codec.Hello: Kind.HELLO, codec.AddWorkload: Kind.ADD, codec.KeepWorkload: Kind.KEEP,
            codec.DelWorkload: Kind.DEL, codec.SnapshotSent: Kind.SNAPSHOT_SENT,
            codec.Ack: Kind.ACK}[type(message)]


class ZdsSession:
    """The protocol state of one ZDS connection, seen from `role`."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = State.AWAIT_HELLO
        self.outstanding: Kind | None = None  # the request awaiting its Ack

    @property
    def peer(self) -> Role:
        return Role.ZTUNNEL if self.role is Role.AGENT else Role.AGENT

    def send(self, message: Message) -> bytes:
        """The datagram for `message`; ZdsUsageError if we may not send it now."""
        kind = kind_of(message)
        problem = self._problem(self.role, kind)
        if problem:
            self.state = State.CLOSED
            raise ZdsUsageError(f"{self.role.value} may not send {kind.value} now: {problem}")
        if isinstance(message, codec.Hello):
            data = codec.encode_hello(message)
        elif isinstance(message, codec.Ack):
            data = codec.encode_response(message)
        else:
            data = codec.encode_request(message)
        self._advance(kind)
        return data

    def receive(self, data: bytes, fds: int) -> Message:
        """Decode the peer's datagram (that came with `fds` fds) and check it is allowed now."""
        if self.state is State.CLOSED:
            raise ZdsProtocolError("session already closed")
        try:
            message = self._decode(data, fds)
            kind = kind_of(message)
            problem = self._problem(self.peer, kind)
            if problem:
                raise ZdsProtocolError(f"{self.peer.value} sent {kind.value}: {problem}")
        except ZdsProtocolError:
            self.state = State.CLOSED
            raise
        self._advance(kind)
        return message

    def _decode(self, data: bytes, fds: int) -> Message:
        if self.peer is Role.ZTUNNEL:
            if self.state is State.AWAIT_HELLO:
                return codec.decode_hello(data, fds)
            return codec.decode_response(data, fds)
        return codec.decode_request(data, fds)

    def _problem(self, sender: Role, kind: Kind) -> str:
        """Why `sender` may not send `kind` now ('' if it may)."""
        if self.state is State.CLOSED:
            return "the session is closed"
        if SENDER[kind] is not sender:
            return f"only {SENDER[kind].value} sends {kind.value}"
        if (self.state, kind) not in TRANSITIONS:
            return f"not allowed in state {self.state.value}"
        if kind in REQUESTS and self.outstanding is not None:
            return f"{self.outstanding.value} is still waiting for its ack"
        if kind is Kind.ACK and self.outstanding is None:
            return "no request is waiting for an ack"
        return ""

    def _advance(self, kind: Kind) -> None:
        self.state = TRANSITIONS[(self.state, kind)]
        if kind in REQUESTS:
            self.outstanding = kind
        elif kind is Kind.ACK:
            if self.outstanding is Kind.SNAPSHOT_SENT:
                self.state = State.READY
            self.outstanding = None
