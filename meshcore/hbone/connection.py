"""`HboneConnection`: the sans-IO HTTP/2 endpoint specialised for HBONE CONNECT tunnels.

Called by the trio adapters in `meshcore.hbone_trio` (client, server, pool). Bytes read from the TLS
stream go to `receive_data`, which returns events; bytes to write are pulled with `data_to_send`.
No I/O, no clocks, no threads: every method runs to completion synchronously.

Send-side contract (zero copy): `send_data` queues a 9-byte header plus a *view* of the caller's
buffer per frame. The caller must not mutate that buffer until the views returned by
`data_to_send()` have been written. Receive-side contract: see `receive_data`.

Flow control: the application calls `acknowledge_received_data(stream_id, n)` for every
`DataReceived.flow_controlled_length` once it has consumed the bytes (also after the stream ended;
after a reset it is harmless and ignored, the core already credited). WINDOW_UPDATEs are batched:
one is sent when half of the respective initial window has been consumed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from meshcore.hbone import frames
from meshcore.hbone.core import Role, Stream
from meshcore.hbone.errors import (
    ErrorCode,
    LocalProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from meshcore.hbone.events import HboneStatistics
from meshcore.hbone.headers import field_list_size, request_fields, response_fields
from meshcore.hbone.receive import Receiver
from meshcore.hbone.settings import DEFAULT_INITIAL_WINDOW, HboneSettings
from meshcore.hbone.state import StreamInput, StreamState, StreamStateError, transition

__all__ = ["HboneConnection", "Role"]

_MAX_STREAM_ID = 2**31 - 1
_DATA = frames.FrameType.DATA
_END_STREAM = frames.Flag.END_STREAM
_HEADER = frames.HEADER
_SENDABLE = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)


class HboneConnection(Receiver):
    """One HTTP/2 connection carrying HBONE CONNECT streams; see the module docstring."""

    def __init__(self, role: Role, settings: HboneSettings = HboneSettings()) -> None:  # noqa: B008
        super().__init__(role, settings)

    # -- connection --------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the client preface (client only), our SETTINGS and the connection WINDOW_UPDATE."""
        if self._initiated:
            raise LocalProtocolError("initiate() called twice")
        self._initiated = True
        if self.role is Role.CLIENT:
            self._queue(frames.CONNECTION_PREFACE)
        self._queue(frames.settings_frame(self.settings.to_wire()))
        grow = self.settings.initial_connection_window - DEFAULT_INITIAL_WINDOW
        if grow:
            self._queue(frames.window_update_frame(0, grow))
            self._conn_recv_window += grow

    def data_to_send(self) -> list[bytes | memoryview]:
        """The buffers to write, in order; empties the queue. Views alias send_data's input."""
        out = self._out
        self._out = []
        self._out_len = 0
        return out

    def bytes_to_send(self) -> int:
        """Total length of the buffers `data_to_send()` would return."""
        return self._out_len

    def ping(self, opaque: bytes | None = None) -> None:
        """Queue a PING with 8 opaque bytes (random if omitted); PingAcknowledged answers it."""
        opaque = os.urandom(8) if opaque is None else opaque
        if len(opaque) != 8:
            raise LocalProtocolError(f"PING payload must be 8 bytes, got {len(opaque)}")
        self._check_alive()
        self._queue(frames.ping_frame(bytes(opaque)))

    def close(
        self, error_code: ErrorCode = ErrorCode.NO_ERROR, additional_data: bytes = b""
    ) -> None:
        """Queue GOAWAY: no new streams either way; open streams may finish (graceful drain)."""
        self._check_alive()
        self._queue(frames.goaway_frame(self._max_peer_stream_id, error_code, additional_data))
        self._goaway_sent = True

    @property
    def can_open_stream(self) -> bool:
        """True if open_connect would succeed: client, live, no GOAWAY, below the peer's limit."""
        limit = self.peer.max_concurrent_streams
        return (
            self.role is Role.CLIENT
            and self._initiated
            and not (self._terminated or self._goaway_sent or self._goaway_received)
            and self._next_stream_id <= _MAX_STREAM_ID
            and (limit is None or self._n_local < limit)
        )

    def open_streams(self) -> int:
        """Streams not yet closed, opened by either side."""
        return len(self._streams)

    def statistics(self) -> HboneStatistics:
        return HboneStatistics(
            open_streams=len(self._streams),
            local_open_streams=self._n_local,
            remote_open_streams=self._n_remote,
            streams_opened=self._streams_opened,
            streams_reset_local=self._resets_local,
            streams_reset_remote=self._resets_remote,
            data_bytes_sent=self._data_sent,
            data_bytes_received=self._data_received,
            connection_send_window=self._conn_send_window,
            connection_receive_window=self._conn_recv_window,
            peer_max_concurrent_streams=self.peer.max_concurrent_streams,
            peer_max_frame_size=self.peer.max_frame_size,
            peer_initial_window_size=self.peer.initial_window_size,
            goaway_sent=self._goaway_sent,
            goaway_received=self._goaway_received,
        )

    # -- streams -----------------------------------------------------------------------------

    def open_connect(self, authority: str, headers: Sequence[tuple[str, str]] = ()) -> int:
        """Client: queue a CONNECT request for `authority` ("ip:port"); return the new stream id.

        Raises TooManyStreamsError when `can_open_stream` is false, LocalProtocolError for a bad
        authority or header.
        """
        if not self.can_open_stream:
            raise TooManyStreamsError(self._why_no_stream())
        fields = request_fields(authority, headers)
        self._check_peer_header_list(fields)
        sid = self._next_stream_id
        self._next_stream_id += 2
        stream = Stream(
            sid,
            local=True,
            send_window=self.peer.initial_window_size,
            recv_window=self._recv_initial_window,
        )
        self._streams[sid] = stream
        self._n_local += 1
        self._streams_opened += 1
        self._send_headers(stream, fields, end_stream=False)
        return sid

    def respond(
        self,
        stream_id: int,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        end_stream: bool = False,
    ) -> None:
        """Server: queue the response HEADERS (200 opens the tunnel; others usually end_stream)."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("respond() is for the server role")
        stream = self._stream(stream_id)
        if stream.headers_sent:
            raise LocalProtocolError(f"stream {stream_id} already has a response")
        fields = response_fields(status, headers)
        self._check_peer_header_list(fields)
        self._send_headers(stream, fields, end_stream=end_stream)

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, end_stream: bool = False
    ) -> int:
        """Queue as much of `data` as the windows allow; return how many bytes were accepted.

        Frames are at most the peer's SETTINGS_MAX_FRAME_SIZE; each is a 9-byte header plus a view
        of `data` (no copy). END_STREAM is sent only if all of `data` was accepted. A return value
        below len(data) means the caller waits for WindowUpdated and sends the rest.
        """
        stream = self._stream(stream_id)
        if self.role is Role.SERVER and not stream.headers_sent:
            raise LocalProtocolError(f"respond() on stream {stream_id} before sending data")
        if stream.state not in _SENDABLE:
            raise StreamClosedError(
                f"stream {stream_id} is {stream.state.value}; cannot send DATA",
                stream_id=stream_id,
            )
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        total = len(view)
        n = min(total, stream.send_window, self._conn_send_window)
        if n > 0:
            out = self._out
            max_frame = self.peer.max_frame_size
            last_flags = _END_STREAM if (end_stream and n == total) else 0
            pos = 0
            frames_queued = 0
            while pos < n:
                size = min(max_frame, n - pos)
                flags = last_flags if pos + size == n else 0
                out.append(_HEADER.pack(size >> 16, size & 0xFFFF, _DATA, flags, stream_id))
                out.append(view[pos : pos + size])
                pos += size
                frames_queued += 1
            self._out_len += n + 9 * frames_queued
            stream.send_window -= n
            self._conn_send_window -= n
            self._data_sent += n
            if last_flags:
                self._apply(stream, StreamInput.SEND_END_STREAM)
            return n
        if end_stream and total == 0:
            self._queue(_HEADER.pack(0, 0, _DATA, _END_STREAM, stream_id))
            self._apply(stream, StreamInput.SEND_END_STREAM)
        return 0

    def end_stream(self, stream_id: int) -> None:
        """Half-close our direction of `stream_id` (an empty DATA frame with END_STREAM)."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Queue RST_STREAM and forget the stream. Resetting an already closed stream is a no-op."""
        self._check_alive()
        if self._is_idle(stream_id):
            raise StreamClosedError(f"stream {stream_id} was never opened", stream_id=stream_id)
        if stream_id in self._streams:
            self._send_reset(stream_id, error_code)

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application consumed `n` bytes of `stream_id`: re-open the windows (batched)."""
        if n < 0:
            raise LocalProtocolError(f"cannot acknowledge {n} bytes")
        if n == 0 or self._terminated:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            if n > stream.unacked:
                raise LocalProtocolError(
                    f"acknowledging {n} bytes on stream {stream_id}, only {stream.unacked} "
                    "were delivered and not yet acknowledged"
                )
            stream.unacked -= n
            self._credit_stream(stream, n)
            self._credit_connection(n)
            return
        pending = self._draining.get(stream_id)
        if pending is None:
            return  # reset stream: the core already credited its bytes
        if n > pending:
            raise LocalProtocolError(
                f"acknowledging {n} bytes on closed stream {stream_id}, only {pending} pending"
            )
        if n == pending:
            del self._draining[stream_id]
        else:
            self._draining[stream_id] = pending - n
        self._credit_connection(n)

    def local_send_window(self, stream_id: int) -> int:
        """How many bytes send_data would accept now: min(stream, connection) window, >= 0."""
        stream = self._stream(stream_id)
        return max(0, min(stream.send_window, self._conn_send_window))

    # -- helpers -----------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if not self._initiated:
            raise LocalProtocolError("call initiate() first")
        if self._terminated:
            raise LocalProtocolError("the connection was terminated by a protocol error")

    def _stream(self, stream_id: int) -> Stream:
        self._check_alive()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(f"stream {stream_id} is not open", stream_id=stream_id)
        return stream

    def _why_no_stream(self) -> str:
        if self.role is not Role.CLIENT:
            return "only the client role opens CONNECT streams"
        if not self._initiated:
            return "call initiate() first"
        if self._terminated or self._goaway_sent:
            return "this connection is closing (GOAWAY sent); open a new one"
        if self._goaway_received:
            return "the peer sent GOAWAY; open a new connection"
        if self._next_stream_id > _MAX_STREAM_ID:
            return "stream ids exhausted; open a new connection"
        return (
            f"peer allows {self.peer.max_concurrent_streams} concurrent streams; "
            "wait for one to close or open a new connection"
        )

    def _check_peer_header_list(self, fields: list[tuple[str, str]]) -> None:
        limit = self.peer.max_header_list_size
        if limit is not None and field_list_size(fields) > limit:
            raise LocalProtocolError(
                f"header list of {field_list_size(fields)} bytes exceeds the peer's "
                f"SETTINGS_MAX_HEADER_LIST_SIZE {limit}"
            )

    def _send_headers(
        self, stream: Stream, fields: list[tuple[str, str]], *, end_stream: bool
    ) -> None:
        try:
            stream.state = transition(stream.state, StreamInput.SEND_HEADERS)
        except StreamStateError as exc:
            raise StreamClosedError(str(exc), stream_id=stream.stream_id) from None
        block = self._encoder.encode(fields)
        for buf in frames.header_frames(
            stream.stream_id, block, end_stream=end_stream, max_frame=self.peer.max_frame_size
        ):
            self._queue(buf)
        stream.headers_sent = True
        if end_stream:
            self._apply(stream, StreamInput.SEND_END_STREAM)
