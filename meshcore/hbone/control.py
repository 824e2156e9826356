"""Handlers for HTTP/2 control frames: SETTINGS, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY, PRIORITY.

Part of the receive path (`receive.Receiver` dispatches complete frames here). Same error policy as
`receive.py`: connection errors raise a `RemoteProtocolError` subclass (the GOAWAY is queued by
`receive_data`), stream errors go through `_stream_error`. Peer SETTINGS are validated in full
before any value is applied, then acknowledged.
"""

from __future__ import annotations

from meshcore.hbone import frames
from meshcore.hbone.core import ConnectionCore, Role
from meshcore.hbone.errors import (
    ErrorCode,
    FlowControlError,
    FrameSizeError,
    RemoteProtocolError,
    error_code_of,
)
from meshcore.hbone.events import (
    ConnectionTerminated,
    Event,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    SettingsAcknowledged,
    StreamReset,
    WindowUpdated,
)
from meshcore.hbone.settings import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_WINDOW,
    SettingCode,
)
from meshcore.hbone.state import StreamInput

__all__ = ["ControlFrames"]

F = frames.Flag
_U32 = frames.U32
_U32_U32 = frames.U32_U32


class ControlFrames(ConnectionCore):
    """Control-frame handlers; see the module docstring."""

    def _on_settings(
        self, flags: int, sid: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        if sid != 0:
            raise RemoteProtocolError("SETTINGS frame on a stream", stream_id=sid)
        if flags & F.ACK:
            if len(payload):
                raise FrameSizeError("SETTINGS ACK with a payload")
            if not self._settings_acked:
                self._settings_acked = True
                delta = self.settings.initial_stream_window - self._recv_initial_window
                self._recv_initial_window = self.settings.initial_stream_window
                for stream in self._streams.values():
                    stream.recv_window += delta
            events.append(SettingsAcknowledged())
            return
        if len(payload) % 6:
            raise FrameSizeError(f"SETTINGS payload of {len(payload)} bytes is not a multiple of 6")
        view = memoryview(payload)
        changes: dict[int, int] = {}
        for off in range(0, len(view), 6):
            ident = view[off] << 8 | view[off + 1]
            changes[ident] = _U32.unpack_from(view, off + 2)[0]
        self._apply_peer_settings(changes)
        self._queue(frames.settings_frame([], ack=True))
        events.append(RemoteSettingsChanged(changes))
        if SettingCode.INITIAL_WINDOW_SIZE in changes:
            events.append(WindowUpdated(0))

    def _apply_peer_settings(self, changes: dict[int, int]) -> None:
        for ident, value in changes.items():
            if ident in (SettingCode.ENABLE_PUSH, SettingCode.ENABLE_CONNECT_PROTOCOL):
                if value > 1:
                    raise RemoteProtocolError(f"SETTINGS {ident} = {value}; must be 0 or 1")
                if ident == SettingCode.ENABLE_PUSH and value and self.role is Role.CLIENT:
                    raise RemoteProtocolError("server sent SETTINGS_ENABLE_PUSH = 1")
            elif ident == SettingCode.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
                raise FlowControlError(f"SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1")
            elif ident == SettingCode.MAX_FRAME_SIZE and not (
                DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT
            ):
                raise RemoteProtocolError(f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
        peer = self.peer
        for ident, value in changes.items():
            if ident == SettingCode.HEADER_TABLE_SIZE:
                peer.header_table_size = value
                self._encoder.header_table_size = value
            elif ident == SettingCode.ENABLE_PUSH:
                peer.enable_push = value
            elif ident == SettingCode.MAX_CONCURRENT_STREAMS:
                peer.max_concurrent_streams = value
            elif ident == SettingCode.INITIAL_WINDOW_SIZE:
                delta = value - peer.initial_window_size
                peer.initial_window_size = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise FlowControlError(
                            "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                            stream_id=stream.stream_id,
                        )
            elif ident == SettingCode.MAX_FRAME_SIZE:
                peer.max_frame_size = value
            elif ident == SettingCode.MAX_HEADER_LIST_SIZE:
                peer.max_header_list_size = value

    def _on_window_update(self, sid: int, payload: bytes | memoryview, events: list[Event]) -> None:
        if len(payload) != 4:
            raise FrameSizeError(f"WINDOW_UPDATE of {len(payload)} bytes", stream_id=sid or None)
        increment = _U32.unpack_from(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise RemoteProtocolError("connection WINDOW_UPDATE with increment 0")
            self._conn_send_window += increment
            if self._conn_send_window > MAX_WINDOW:
                raise FlowControlError("WINDOW_UPDATE overflows the connection send window")
            events.append(WindowUpdated(0))
            return
        stream = self._streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise RemoteProtocolError("WINDOW_UPDATE on an idle stream", stream_id=sid)
            return  # late update for a closed stream
        if increment == 0:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE increment 0", events)
            return
        self._apply(stream, StreamInput.RECV_WINDOW_UPDATE)
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(
                sid,
                ErrorCode.FLOW_CONTROL_ERROR,
                "WINDOW_UPDATE overflows the stream send window",
                events,
            )
            return
        events.append(WindowUpdated(sid))

    def _on_ping(
        self, flags: int, sid: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        if sid != 0:
            raise RemoteProtocolError("PING frame on a stream", stream_id=sid)
        if len(payload) != 8:
            raise FrameSizeError(f"PING of {len(payload)} bytes")
        opaque = bytes(payload)
        if flags & F.ACK:
            events.append(PingAcknowledged(opaque))
        else:
            self._queue(frames.ping_frame(opaque, ack=True))
            events.append(PingReceived(opaque))

    def _on_rst_stream(self, sid: int, payload: bytes | memoryview, events: list[Event]) -> None:
        if sid == 0:
            raise RemoteProtocolError("RST_STREAM frame on stream 0")
        if len(payload) != 4:
            raise FrameSizeError(f"RST_STREAM of {len(payload)} bytes", stream_id=sid)
        stream = self._streams.get(sid)
        if stream is None:
            if self._is_idle(sid):
                raise RemoteProtocolError("RST_STREAM on an idle stream", stream_id=sid)
            return
        code = error_code_of(_U32.unpack_from(payload)[0])
        self._apply(stream, StreamInput.RECV_RST_STREAM)
        self._resets_remote += 1
        events.append(StreamReset(sid, code, remote=True))

    def _on_goaway(self, sid: int, payload: bytes | memoryview, events: list[Event]) -> None:
        if sid != 0:
            raise RemoteProtocolError("GOAWAY frame on a stream", stream_id=sid)
        if len(payload) < 8:
            raise FrameSizeError(f"GOAWAY of {len(payload)} bytes")
        last, code = _U32_U32.unpack_from(payload)
        last &= 0x7FFFFFFF
        self._goaway_received = True
        events.append(ConnectionTerminated(error_code_of(code), last, bytes(payload[8:])))
        for stream in [s for s in self._streams.values() if s.local and s.stream_id > last]:
            self._close_stream(stream, reset=True)
            events.append(
                StreamReset(
                    stream.stream_id,
                    ErrorCode.REFUSED_STREAM,
                    remote=True,
                    reason="above the peer's GOAWAY last_stream_id",
                )
            )

    def _on_priority(self, sid: int, payload: bytes | memoryview, events: list[Event]) -> None:
        if sid == 0:
            raise RemoteProtocolError("PRIORITY frame on stream 0")
        if len(payload) != 5:
            if self._is_idle(sid):  # RST_STREAM may not name an idle stream
                raise FrameSizeError("PRIORITY not 5 bytes", stream_id=sid)
            self._stream_error(sid, ErrorCode.FRAME_SIZE_ERROR, "PRIORITY not 5 bytes", events)
            return
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            if self._is_idle(sid):
                raise RemoteProtocolError("PRIORITY: stream depends on itself", stream_id=sid)
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR, "stream depends on itself", events)
        # Otherwise ignored: RFC 9113 deprecates the priority scheme.
