"""The receive path of the HBONE core: `receive_data` and one handler per frame type.

Called through `HboneConnection.receive_data`. Parse items come from `frames.FrameReader`; events go
to the list returned to the adapter. Error policy (RFC 9113 §5.4): connection errors raise a
`RemoteProtocolError` subclass, which `receive_data` catches once to queue GOAWAY and attach the
events decoded so far, then re-raises; stream errors go through `_stream_error` (RST_STREAM plus
StreamReset(remote=False)) and processing continues with the next frame.

The DATA hot path is the `K_DATA` branch at the top of the loop: one tuple, one dict-free stream
check, one DataReceived per input buffer a frame spans.
"""

from __future__ import annotations

from meshcore.hbone import frames
from meshcore.hbone.control import ControlFrames
from meshcore.hbone.core import Role, Stream
from meshcore.hbone.errors import (
    ErrorCode,
    FlowControlError,
    LocalProtocolError,
    RemoteProtocolError,
)
from meshcore.hbone.events import (
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
)
from meshcore.hbone.headers import (
    MalformedHeaders,
    decode_block,
    field_list_size,
    parse_request,
    parse_response,
)
from meshcore.hbone.state import StreamInput, StreamStateError

__all__ = ["Receiver"]

FT = frames.FrameType
F = frames.Flag
_K_DATA, _K_DATA_HEAD, _K_DATA_END = frames.K_DATA, frames.K_DATA_HEAD, frames.K_DATA_END
_U32 = frames.U32


class Receiver(ControlFrames):
    """Frame handlers; see the module docstring."""

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes read from the transport; return the events they complete.

        Data lifetime: nothing keeps a reference to `data` after this returns except the
        `DataReceived.data` views of it. Incomplete frame headers and control frames are copied
        into an internal buffer; DATA payload is never copied. A caller that passes a fresh buffer
        per call may keep the views; one that reuses its buffer must consume them first.

        Raises a RemoteProtocolError subclass on a connection error (GOAWAY already queued; the
        events decoded before it are in `.events`). After that, input is ignored.
        """
        if not self._initiated:
            raise LocalProtocolError("call initiate() before receive_data()")
        if self._terminated:
            return []
        events: list[Event] = []
        try:
            for item in self._reader.feed(data):
                kind = item[0]
                if kind == _K_DATA:
                    view = item[1]
                    stream = self._cur_stream
                    n = len(view)
                    if stream is not None:
                        stream.unacked += n
                        self._data_received += n
                        events.append(DataReceived(stream.stream_id, view, n))
                    else:
                        self._credit_connection(n)
                elif kind == _K_DATA_HEAD:
                    self._on_data_head(item[1], item[2], item[3], events)
                elif kind == _K_DATA_END:
                    self._on_data_end(item[1], events)
                else:
                    self._on_frame(item[1], item[2], item[3], item[4], events)
        except RemoteProtocolError as exc:
            exc.events = list(events)
            self._fail(exc.error_code, str(exc))
            raise
        return events

    # -- DATA --------------------------------------------------------------------------------

    def _on_data_head(self, flags: int, sid: int, length: int, events: list[Event]) -> None:
        self._check_order(FT.DATA, flags)
        if sid == 0:
            raise RemoteProtocolError("DATA frame on stream 0")
        self._conn_recv_window -= length
        if self._conn_recv_window < 0:
            raise FlowControlError(
                f"DATA of {length} bytes overflows the connection receive window", stream_id=sid
            )
        self._cur_sid = sid
        self._cur_end_stream = bool(flags & F.END_STREAM)
        self._cur_stream = None
        stream = self._streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise RemoteProtocolError("DATA frame on an idle stream", stream_id=sid)
            if sid not in self._reset_by_us:
                self._stream_error(sid, ErrorCode.STREAM_CLOSED, "DATA on a closed stream", events)
            return
        try:
            self._apply(stream, StreamInput.RECV_DATA)
        except StreamStateError as exc:
            self._stream_error(sid, ErrorCode.STREAM_CLOSED, str(exc), events)
            return
        if not stream.headers_received:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR, "DATA before HEADERS", events)
            return
        stream.recv_window -= length
        if stream.recv_window < 0:
            self._stream_error(
                sid, ErrorCode.FLOW_CONTROL_ERROR, "DATA overflows the stream window", events
            )
            return
        self._cur_stream = stream

    def _on_data_end(self, padding: int, events: list[Event]) -> None:
        stream = self._cur_stream
        self._cur_stream = None
        if padding:
            self._credit_connection(padding)
            if stream is not None:
                self._credit_stream(stream, padding)
        if stream is not None and self._cur_end_stream:
            self._end_remote(stream, events)

    def _end_remote(self, stream: Stream, events: list[Event]) -> None:
        self._apply(stream, StreamInput.RECV_END_STREAM)
        events.append(StreamEnded(stream.stream_id))

    # -- dispatch of complete frames -----------------------------------------------------------

    def _check_order(self, ftype: int, flags: int) -> None:
        if not self._peer_settings_seen:
            if ftype != FT.SETTINGS or flags & F.ACK:
                raise RemoteProtocolError(
                    f"first frame from the peer is type {ftype}, not SETTINGS (is it HTTP/2?)"
                )
            self._peer_settings_seen = True
        if self._continuation is not None and ftype != FT.CONTINUATION:
            raise RemoteProtocolError(
                f"frame type {ftype} interleaved in a header block", stream_id=self._continuation[0]
            )

    def _on_frame(
        self, ftype: int, flags: int, sid: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        self._check_order(ftype, flags)
        if ftype == FT.HEADERS:
            self._on_headers(flags, sid, payload, events)
        elif ftype == FT.CONTINUATION:
            self._on_continuation(flags, sid, payload, events)
        elif ftype == FT.SETTINGS:
            self._on_settings(flags, sid, payload, events)
        elif ftype == FT.WINDOW_UPDATE:
            self._on_window_update(sid, payload, events)
        elif ftype == FT.PING:
            self._on_ping(flags, sid, payload, events)
        elif ftype == FT.RST_STREAM:
            self._on_rst_stream(sid, payload, events)
        elif ftype == FT.GOAWAY:
            self._on_goaway(sid, payload, events)
        elif ftype == FT.PRIORITY:
            self._on_priority(sid, payload, events)
        elif ftype == FT.PUSH_PROMISE:
            raise RemoteProtocolError("PUSH_PROMISE received; push is disabled", stream_id=sid)
        # Unknown frame types are ignored (RFC 9113 §4.1).

    # -- HEADERS / CONTINUATION ----------------------------------------------------------------

    def _on_headers(
        self, flags: int, sid: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        if sid == 0:
            raise RemoteProtocolError("HEADERS frame on stream 0")
        fragment, dependency = frames.split_headers_payload(flags, payload, sid)
        if flags & F.END_HEADERS:
            self._on_header_block(sid, flags, bytes(fragment), dependency, events)
        else:
            self._continuation = (sid, flags, bytearray(fragment))
            self._check_block_size(self._continuation[2], sid)

    def _check_block_size(self, block: bytearray, sid: int) -> None:
        if len(block) > 2 * self.settings.max_header_list_size:
            raise RemoteProtocolError(
                f"header block of {len(block)}+ bytes exceeds twice our max header list size",
                error_code=ErrorCode.ENHANCE_YOUR_CALM,
                stream_id=sid,
            )

    def _on_continuation(
        self, flags: int, sid: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        cont = self._continuation
        if cont is None or cont[0] != sid:
            raise RemoteProtocolError("CONTINUATION without a preceding HEADERS", stream_id=sid)
        cont[2].extend(payload)
        self._check_block_size(cont[2], sid)
        if flags & F.END_HEADERS:
            self._continuation = None
            self._on_header_block(sid, cont[1], bytes(cont[2]), None, events)

    def _on_header_block(
        self, sid: int, flags: int, block: bytes, dependency: int | None, events: list[Event]
    ) -> None:
        fields = decode_block(self._decoder, block, sid)  # always: keeps the HPACK table in sync
        stream = self._streams.get(sid)
        if stream is None:
            if sid & 1 != self._peer_parity or self.role is Role.CLIENT:
                if self._is_idle(sid):
                    raise RemoteProtocolError(
                        "HEADERS opening a stream the peer may not open", stream_id=sid
                    )
                self._headers_on_closed(sid, events)
                return
            if sid <= self._max_peer_stream_id:
                self._headers_on_closed(sid, events)
                return
            self._max_peer_stream_id = sid
            stream = Stream(
                sid,
                local=False,
                send_window=self.peer.initial_window_size,
                recv_window=self._recv_initial_window,
            )
            self._streams[sid] = stream
            self._n_remote += 1
            self._streams_opened += 1
            self._apply(stream, StreamInput.RECV_HEADERS)
            if self._goaway_sent:
                self._stream_error(sid, ErrorCode.REFUSED_STREAM, "after our GOAWAY", events)
                return
            if self._settings_acked and self._n_remote > self.settings.max_concurrent_streams:
                self._stream_error(
                    sid,
                    ErrorCode.REFUSED_STREAM,
                    "over our SETTINGS_MAX_CONCURRENT_STREAMS",
                    events,
                )
                return
        else:
            try:
                self._apply(stream, StreamInput.RECV_HEADERS)
            except StreamStateError as exc:
                self._stream_error(sid, ErrorCode.STREAM_CLOSED, str(exc), events)
                return
            if stream.headers_received:
                self._stream_error(
                    sid,
                    ErrorCode.PROTOCOL_ERROR,
                    "second HEADERS block on a CONNECT stream",
                    events,
                )
                return
        if dependency == sid:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself", events)
            return
        if field_list_size(fields) > self.settings.max_header_list_size:
            self._stream_error(
                sid,
                ErrorCode.PROTOCOL_ERROR,
                "header list larger than our SETTINGS_MAX_HEADER_LIST_SIZE",
                events,
            )
            return
        end_stream = bool(flags & F.END_STREAM)
        try:
            if self.role is Role.SERVER:
                method, authority, scheme, path, regular = parse_request(fields)
                event: Event = RequestReceived(sid, method, authority, regular, scheme, path)
            else:
                status, regular = parse_response(fields)
                if status < 200:
                    if end_stream:
                        raise MalformedHeaders("interim response with END_STREAM")
                    return  # interim (1xx) responses are skipped; the final one follows
                event = ResponseReceived(sid, status, regular)
        except MalformedHeaders as exc:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR, str(exc), events)
            return
        stream.headers_received = True
        events.append(event)
        if end_stream:
            self._end_remote(stream, events)

    def _headers_on_closed(self, sid: int, events: list[Event]) -> None:
        if sid not in self._reset_by_us:
            self._stream_error(sid, ErrorCode.STREAM_CLOSED, "HEADERS on a closed stream", events)
