"""Shared connection state of the HBONE core: streams, windows, the output queue, error paths.

Layering inside the package (each class adds to the one before): `core.ConnectionCore` (this
file: state plus the helpers both directions need) <- `control.ControlFrames` (control-frame
handlers) <- `receive.Receiver` (`receive_data`, DATA and header blocks) <-
`connection.HboneConnection` (the public API). Nothing outside the package uses this module.

Invariants:
- `_streams` holds exactly the streams not in CLOSED; a stream leaves it through `_close_stream`.
- Every DATA byte charged to our connection receive window is credited back exactly once: by the
  application (`acknowledge_received_data`), or by the core for bytes it discarded (frames on
  closed/reset streams, padding) and for delivered-but-unacknowledged bytes of a reset stream.
- `_out` holds buffers in wire order; `_out_len` is their total length.
"""

from __future__ import annotations

import enum
from typing import Final

import hpack

from meshcore.hbone import frames
from meshcore.hbone.errors import ErrorCode
from meshcore.hbone.events import Event, StreamReset
from meshcore.hbone.settings import DEFAULT_INITIAL_WINDOW, HboneSettings, PeerSettings
from meshcore.hbone.state import StreamInput, StreamState, transition

__all__ = ["ConnectionCore", "Role", "Stream"]

_RESET_MEMORY: Final = 1024  # how many streams we reset are remembered (late frames are ignored)


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Stream:
    """One stream's state and windows (mutable; owned by the connection)."""

    __slots__ = (
        "headers_received",
        "headers_sent",
        "local",
        "recv_consumed",
        "recv_window",
        "send_window",
        "state",
        "stream_id",
        "unacked",
    )

    def __init__(self, stream_id: int, *, local: bool, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.local = local  # opened by us
        self.state = StreamState.IDLE
        self.send_window = send_window
        self.recv_window = recv_window  # what the peer may still send, as we account it
        self.recv_consumed = 0  # acknowledged by the application, not yet announced
        self.unacked = 0  # delivered in DataReceived, not yet acknowledged
        self.headers_sent = False
        self.headers_received = False


class ConnectionCore:
    """State and helpers; see the module docstring."""

    def __init__(self, role: Role, settings: HboneSettings) -> None:
        self.role = role
        self.settings = settings
        self.peer = PeerSettings()
        self._reader = frames.FrameReader(
            settings.max_frame_size, expect_preface=role is Role.SERVER
        )
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        # We check the list size ourselves after decoding, so the HPACK context never breaks.
        self._decoder.max_header_list_size = 2**31
        self._out: list[bytes | memoryview] = []
        self._out_len = 0
        self._streams: dict[int, Stream] = {}
        self._draining: dict[int, int] = {}  # closed streams: delivered bytes not yet acknowledged
        self._reset_by_us: dict[int, None] = {}  # insertion-ordered set, bounded
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._max_peer_stream_id = 0
        self._peer_parity = 0 if role is Role.CLIENT else 1
        self._n_local = 0
        self._n_remote = 0
        self._conn_send_window = DEFAULT_INITIAL_WINDOW
        self._conn_recv_window = DEFAULT_INITIAL_WINDOW
        self._conn_recv_consumed = 0
        # Our SETTINGS apply once acknowledged (RFC 9113 §6.5.3); until then, RFC defaults.
        self._recv_initial_window = DEFAULT_INITIAL_WINDOW
        self._settings_acked = False
        self._initiated = False
        self._peer_settings_seen = False
        self._terminated = False  # a connection error happened
        self._goaway_sent = False
        self._goaway_received = False
        self._continuation: tuple[int, int, bytearray] | None = None
        self._cur_stream: Stream | None = None  # DATA frame being received
        self._cur_end_stream = False
        self._cur_sid = 0
        # statistics
        self._streams_opened = 0
        self._resets_local = 0
        self._resets_remote = 0
        self._data_sent = 0
        self._data_received = 0

    # -- output ------------------------------------------------------------------------------

    def _queue(self, buf: bytes) -> None:
        self._out.append(buf)
        self._out_len += len(buf)

    # -- streams -----------------------------------------------------------------------------

    def _apply(self, stream: Stream, event: StreamInput) -> None:
        """Move `stream` through the state table; close it when it reaches CLOSED."""
        stream.state = transition(stream.state, event)
        if stream.state is StreamState.CLOSED:
            self._close_stream(
                stream, reset=event in (StreamInput.SEND_RST_STREAM, StreamInput.RECV_RST_STREAM)
            )

    def _close_stream(self, stream: Stream, *, reset: bool) -> None:
        stream.state = StreamState.CLOSED
        if self._streams.pop(stream.stream_id, None) is None:
            return
        if stream.local:
            self._n_local -= 1
        else:
            self._n_remote -= 1
        if self._cur_stream is stream:
            self._cur_stream = None
        if stream.unacked:
            if reset:  # nobody will read the rest: credit it now; later acks are ignored
                self._credit_connection(stream.unacked)
            else:
                self._draining[stream.stream_id] = stream.unacked
            stream.unacked = 0

    def _remember_reset(self, stream_id: int) -> None:
        self._reset_by_us[stream_id] = None
        if len(self._reset_by_us) > _RESET_MEMORY:
            del self._reset_by_us[next(iter(self._reset_by_us))]

    def _send_reset(self, stream_id: int, error_code: int) -> None:
        self._queue(frames.rst_stream_frame(stream_id, error_code))
        self._remember_reset(stream_id)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._close_stream(stream, reset=True)

    def _stream_error(
        self, stream_id: int, error_code: ErrorCode, reason: str, events: list[Event]
    ) -> None:
        """The peer broke a stream-level rule: RST_STREAM it, tell the app, keep the connection."""
        self._send_reset(stream_id, error_code)
        self._resets_local += 1
        events.append(StreamReset(stream_id, error_code, remote=False, reason=reason))

    def _is_idle(self, stream_id: int) -> bool:
        """True if `stream_id` was never opened by either side (RFC 9113 §5.1.1)."""
        if stream_id & 1 == self._peer_parity:
            return stream_id > self._max_peer_stream_id
        return stream_id >= self._next_stream_id

    # -- receive-side flow control --------------------------------------------------------------

    def _credit_connection(self, n: int) -> None:
        self._conn_recv_consumed += n
        if self._conn_recv_consumed >= self.settings.initial_connection_window // 2:
            self._queue(frames.window_update_frame(0, self._conn_recv_consumed))
            self._conn_recv_window += self._conn_recv_consumed
            self._conn_recv_consumed = 0

    def _credit_stream(self, stream: Stream, n: int) -> None:
        stream.recv_consumed += n
        if stream.state is StreamState.HALF_CLOSED_REMOTE:
            return  # the peer sends no more; a WINDOW_UPDATE would be wasted
        if stream.recv_consumed >= max(1, self._recv_initial_window // 2):
            self._apply(stream, StreamInput.SEND_WINDOW_UPDATE)
            self._queue(frames.window_update_frame(stream.stream_id, stream.recv_consumed))
            stream.recv_window += stream.recv_consumed
            stream.recv_consumed = 0

    # -- connection errors -------------------------------------------------------------------

    def _fail(self, error_code: int, message: str) -> None:
        """Queue our GOAWAY for a connection error; the connection accepts nothing afterwards."""
        if not self._goaway_sent:
            self._queue(
                frames.goaway_frame(self._max_peer_stream_id, error_code, message.encode()[:256])
            )
        self._goaway_sent = True
        self._terminated = True
        self._continuation = None
