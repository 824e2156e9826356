"""Events returned by `HboneConnection.receive_data`, and the `HboneStatistics` snapshot.

All events are frozen, slotted dataclasses. The trio adapters (`meshcore.hbone_trio`) dispatch on
their type. `DataReceived.data` is a view into the buffer the caller passed to `receive_data` (see
the data lifetime contract in `connection.py`); every other field is an owned, immutable value.
"""

from __future__ import annotations

import dataclasses

from meshcore.hbone.errors import ErrorCode

__all__ = [
    "ConnectionTerminated",
    "DataReceived",
    "Event",
    "HboneStatistics",
    "PingAcknowledged",
    "PingReceived",
    "RemoteSettingsChanged",
    "RequestReceived",
    "ResponseReceived",
    "SettingsAcknowledged",
    "StreamEnded",
    "StreamReset",
    "WindowUpdated",
]


@dataclasses.dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server side: a request opened `stream_id`. HBONE expects `method == "CONNECT"`, with
    `scheme`/`path` None; the adapter answers 400 to anything else. `headers` are the regular
    (non-pseudo) headers in order, names lowercase."""

    stream_id: int
    method: str
    authority: str | None
    headers: tuple[tuple[str, str], ...]
    scheme: str | None = None
    path: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Client side: the final response for `stream_id`; 200 means the tunnel is open."""

    stream_id: int
    status: int
    headers: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class DataReceived:
    """Tunnel bytes for `stream_id`. `data` views the caller's input buffer (no copy). A DATA frame
    split across `receive_data` calls arrives as several events. Pass `flow_controlled_length` to
    `acknowledge_received_data` once the bytes are consumed (it equals `len(data)`; padding is
    credited back by the core itself)."""

    stream_id: int
    data: memoryview
    flow_controlled_length: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed `stream_id` (END_STREAM): no more data will arrive on it."""

    stream_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamReset:
    """`stream_id` is gone. `remote=True`: the peer sent RST_STREAM (or refused it by GOAWAY);
    `remote=False`: the core reset it because the peer broke a stream-level rule (`reason` says
    which) and RST_STREAM is queued."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class WindowUpdated:
    """The send window of `stream_id` grew; 0 means the connection window grew or the peer's
    SETTINGS changed the initial window of every stream. Blocked senders may retry."""

    stream_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer sent PING; the core already queued the ACK."""

    opaque: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """The peer acknowledged one of our PINGs."""

    opaque: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsAcknowledged:
    """The peer applied our SETTINGS."""


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteSettingsChanged:
    """The peer's SETTINGS frame, already applied and acknowledged: {identifier: value}."""

    changes: dict[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The peer sent GOAWAY. Streams we opened above `last_stream_id` were refused (each also got
    a StreamReset(REFUSED_STREAM, remote=True)); no new streams may be opened."""

    error_code: ErrorCode | int
    last_stream_id: int
    additional_data: bytes


Event = (
    RequestReceived
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | WindowUpdated
    | PingReceived
    | PingAcknowledged
    | SettingsAcknowledged
    | RemoteSettingsChanged
    | ConnectionTerminated
)


@dataclasses.dataclass(frozen=True, slots=True)
class HboneStatistics:
    """A snapshot of one connection's counters (served by the admin endpoint)."""

    open_streams: int
    local_open_streams: int
    remote_open_streams: int
    streams_opened: int
    streams_reset_local: int
    streams_reset_remote: int
    data_bytes_sent: int
    data_bytes_received: int
    connection_send_window: int
    connection_receive_window: int
    peer_max_concurrent_streams: int | None
    peer_max_frame_size: int
    peer_initial_window_size: int
    goaway_sent: bool
    goaway_received: bool
