"""Sans-IO HBONE protocol core: a minimal HTTP/2 (RFC 9113) endpoint for CONNECT tunnels.

Import everything from here (`from meshcore.hbone import HboneConnection, Role, ...`). The trio
adapters in `meshcore.hbone_trio` drive it; see docs/hbone-protocol.md for the design, the window
and frame-size values, and the data lifetime contract.

Additions to the agreed API (nothing renamed): `close()` takes optional `additional_data`;
`ping()` without an argument sends random opaque bytes; `StreamReset` has a `reason` string;
`RemoteProtocolError.events` holds events decoded before a connection error. Clarifications:
a DATA frame split across `receive_data` calls arrives as several `DataReceived` (payload is
streamed, never buffered); `DataReceived.flow_controlled_length == len(data)` (padding is
credited by the core); on GOAWAY, our streams above `last_stream_id` also get
`StreamReset(REFUSED_STREAM, remote=True)` so the adapter can retry them on a new connection.
"""

from meshcore.hbone.connection import HboneConnection
from meshcore.hbone.core import Role
from meshcore.hbone.errors import (
    CompressionError,
    ErrorCode,
    FlowControlError,
    FrameSizeError,
    HboneError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from meshcore.hbone.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    HboneStatistics,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from meshcore.hbone.settings import HboneSettings

__all__ = [
    "CompressionError",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "Event",
    "FlowControlError",
    "FrameSizeError",
    "HboneConnection",
    "HboneError",
    "HboneSettings",
    "HboneStatistics",
    "LocalProtocolError",
    "PingAcknowledged",
    "PingReceived",
    "RemoteProtocolError",
    "RemoteSettingsChanged",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "SettingsAcknowledged",
    "StreamClosedError",
    "StreamEnded",
    "StreamReset",
    "TooManyStreamsError",
    "WindowUpdated",
]
