"""The HTTP/2 stream state machine (RFC 9113 §5.1), as one table.

Rules:
1. Every transition of a stream's state is in `TRANSITIONS` below; `connection.py` never assigns a
   state itself, it calls `transition(state, input)`.
2. A (state, input) pair missing from the table is invalid: `transition` raises `StreamStateError`
   and the caller turns it into an error. For RECV_* inputs the connection decides the error kind
   (RFC 9113 §5.1: a frame on an idle stream is a connection error PROTOCOL_ERROR; on a
   half-closed(remote) or closed stream a stream error STREAM_CLOSED). For SEND_* inputs it is our
   caller's mistake (LocalProtocolError).
3. The table does not know the role (client/server): HEADERS opens a stream from IDLE whichever side
   sends it. CONNECT-specific rules (one HEADERS block per direction, no DATA before the response)
   live in `connection.py`, not here.
4. A HEADERS or DATA frame with END_STREAM is two inputs: the frame's, then *_END_STREAM.
5. RESERVED states are absent: push is disabled (we advertise ENABLE_PUSH=0 and PUSH_PROMISE is a
   connection error). CLOSED is terminal; only late WINDOW_UPDATE / RST_STREAM / PRIORITY from the
   peer are tolerated there (RFC 9113 §5.1 "closed").
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "StreamInput", "StreamState", "StreamStateError", "transition"]


class StreamState(enum.Enum):
    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"


class StreamInput(enum.Enum):
    SEND_HEADERS = "send HEADERS"
    SEND_DATA = "send DATA"
    SEND_END_STREAM = "send END_STREAM"
    SEND_RST_STREAM = "send RST_STREAM"
    SEND_WINDOW_UPDATE = "send WINDOW_UPDATE"
    RECV_HEADERS = "receive HEADERS"
    RECV_DATA = "receive DATA"
    RECV_END_STREAM = "receive END_STREAM"
    RECV_RST_STREAM = "receive RST_STREAM"
    RECV_WINDOW_UPDATE = "receive WINDOW_UPDATE"
    RECV_PRIORITY = "receive PRIORITY"


class StreamStateError(Exception):
    """Internal: `input` is not allowed in `state` (the connection maps it to a wire error)."""

    def __init__(self, state: StreamState, event: StreamInput) -> None:
        super().__init__(f"{event.value} is not allowed in state {state.value}")
        self.state = state
        self.input = event


S = StreamState
I = StreamInput  # noqa: E741

TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    # idle: only HEADERS opens a stream; PRIORITY may name an idle stream without opening it.
    (S.IDLE, I.SEND_HEADERS): S.OPEN,
    (S.IDLE, I.RECV_HEADERS): S.OPEN,
    (S.IDLE, I.RECV_PRIORITY): S.IDLE,
    # open: everything flows; END_STREAM half-closes the sender's direction.
    (S.OPEN, I.SEND_HEADERS): S.OPEN,
    (S.OPEN, I.RECV_HEADERS): S.OPEN,
    (S.OPEN, I.SEND_DATA): S.OPEN,
    (S.OPEN, I.RECV_DATA): S.OPEN,
    (S.OPEN, I.SEND_END_STREAM): S.HALF_CLOSED_LOCAL,
    (S.OPEN, I.RECV_END_STREAM): S.HALF_CLOSED_REMOTE,
    (S.OPEN, I.SEND_RST_STREAM): S.CLOSED,
    (S.OPEN, I.RECV_RST_STREAM): S.CLOSED,
    (S.OPEN, I.SEND_WINDOW_UPDATE): S.OPEN,
    (S.OPEN, I.RECV_WINDOW_UPDATE): S.OPEN,
    (S.OPEN, I.RECV_PRIORITY): S.OPEN,
    # half-closed (local): we sent END_STREAM; we only receive (and open windows).
    (S.HALF_CLOSED_LOCAL, I.RECV_HEADERS): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.SEND_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.RECV_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, I.SEND_WINDOW_UPDATE): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_WINDOW_UPDATE): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_PRIORITY): S.HALF_CLOSED_LOCAL,
    # half-closed (remote): the peer sent END_STREAM; we only send.
    (S.HALF_CLOSED_REMOTE, I.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.SEND_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.RECV_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, I.RECV_WINDOW_UPDATE): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.RECV_PRIORITY): S.HALF_CLOSED_REMOTE,
    # closed: terminal; late control frames from the peer are ignored.
    (S.CLOSED, I.RECV_WINDOW_UPDATE): S.CLOSED,
    (S.CLOSED, I.RECV_RST_STREAM): S.CLOSED,
    (S.CLOSED, I.RECV_PRIORITY): S.CLOSED,
}

del S, I


def transition(state: StreamState, event: StreamInput) -> StreamState:
    """The state after `event` in `state`; raise StreamStateError if the table has no entry."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise StreamStateError(state, event) from None
