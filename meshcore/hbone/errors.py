"""HTTP/2 error codes and the typed errors of the HBONE protocol core.

Who raises what:
- `HboneConnection.receive_data` raises a `RemoteProtocolError` (or a subclass) when the *peer*
  broke HTTP/2 at connection level. By the time it propagates, the GOAWAY carrying `error_code` is
  already queued in `data_to_send()`: the adapter flushes it and closes the transport. Events
  decoded earlier in the same call ride along in `.events`.
- Stream-level violations are never raised: the core queues RST_STREAM and reports
  `StreamReset(remote=False)`, and every other stream carries on.
- `LocalProtocolError` (and subclasses) means *our caller* misused the API (sending on a closed
  stream, opening past the peer's stream limit, a malformed header). Nothing is queued for it.
"""

from __future__ import annotations

import enum

from meshcore.errors import MeshCoreError

__all__ = [
    "CompressionError",
    "ErrorCode",
    "FlowControlError",
    "FrameSizeError",
    "HboneError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "StreamClosedError",
    "TooManyStreamsError",
    "error_code_of",
]


class ErrorCode(enum.IntEnum):
    """RFC 9113 §7 error codes, as carried by RST_STREAM and GOAWAY."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def error_code_of(value: int) -> ErrorCode | int:
    """The ErrorCode for a wire value; unknown codes stay plain ints (RFC 9113 §7: not an error)."""
    try:
        return ErrorCode(value)
    except ValueError:
        return value


class HboneError(MeshCoreError):
    """Base of every error raised by the HBONE protocol core."""


class RemoteProtocolError(HboneError):
    """The peer broke HTTP/2 badly enough to end the connection; our GOAWAY is already queued.

    Attributes: `error_code` (sent in our GOAWAY), `stream_id` (the stream the offending frame
    named, or None), `events` (events decoded in the same `receive_data` call before the error).
    """

    default_code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(
        self, message: str, *, error_code: ErrorCode | None = None, stream_id: int | None = None
    ) -> None:
        super().__init__(message)
        self.error_code: ErrorCode = error_code if error_code is not None else self.default_code
        self.stream_id = stream_id
        self.events: list[object] = []

    def __str__(self) -> str:
        where = f" (stream {self.stream_id})" if self.stream_id is not None else ""
        return f"{self.error_code.name}{where}: {self.args[0]}"


class FlowControlError(RemoteProtocolError):
    """The peer sent past a flow-control window or overflowed one with WINDOW_UPDATE/SETTINGS."""

    default_code = ErrorCode.FLOW_CONTROL_ERROR


class FrameSizeError(RemoteProtocolError):
    """A frame was larger than we advertise, or a fixed-size frame had the wrong length."""

    default_code = ErrorCode.FRAME_SIZE_ERROR


class CompressionError(RemoteProtocolError):
    """A header block could not be HPACK-decoded; the shared compression context is lost."""

    default_code = ErrorCode.COMPRESSION_ERROR


class LocalProtocolError(HboneError):
    """Our caller asked for something HTTP/2 (or HBONE's CONNECT profile) does not allow."""


class StreamClosedError(LocalProtocolError):
    """The stream is unknown, closed, or closed in the direction the caller tried to use."""

    def __init__(self, message: str, *, stream_id: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class TooManyStreamsError(LocalProtocolError):
    """No new stream may be opened: the peer's concurrency limit is reached, a GOAWAY arrived,
    the connection was closed, or stream ids are exhausted. Open a new connection instead."""
