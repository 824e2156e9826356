"""HTTP/2 settings for HBONE connections: what we advertise, and the peer's values we honour.

`HboneSettings` is the caller-facing, validated, frozen configuration (ztunnel's defaults, see
docs/hbone-protocol.md). `PeerSettings` is the mutable record of what the peer advertised, owned by
`HboneConnection` and changed only when a SETTINGS frame is processed. Used by `connection.py`.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = [
    "DEFAULT_INITIAL_WINDOW",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_FRAME_SIZE_LIMIT",
    "MAX_WINDOW",
    "HboneSettings",
    "PeerSettings",
    "SettingCode",
]

DEFAULT_INITIAL_WINDOW = 65_535  # RFC 9113 §6.5.2 and §6.9.2
DEFAULT_MAX_FRAME_SIZE = 16_384
MAX_FRAME_SIZE_LIMIT = 2**24 - 1
MAX_WINDOW = 2**31 - 1


class SettingCode(enum.IntEnum):
    """RFC 9113 §6.5.2 setting identifiers (plus RFC 8441's, which we recognise and ignore)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


@dataclasses.dataclass(frozen=True, slots=True)
class HboneSettings:
    """What this endpoint advertises and accepts. Defaults are ztunnel's (REFERENCE §2).

    `initial_connection_window` should stay well above `initial_stream_window`: with equal values a
    single stream whose reader stalls can starve every other stream on the connection (ztunnel notes
    this deadlocks some applications). `max_concurrent_streams` is what we allow the *peer* to open
    (ztunnel's server advertises 200, its client 100).
    """

    initial_stream_window: int = 4 * 1024 * 1024
    initial_connection_window: int = 16 * 1024 * 1024
    max_frame_size: int = 1024 * 1024
    max_concurrent_streams: int = 100
    max_header_list_size: int = 64 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.initial_stream_window <= MAX_WINDOW:
            raise ValueError(
                f"initial_stream_window={self.initial_stream_window} must be in 1..{MAX_WINDOW}"
            )
        if not DEFAULT_INITIAL_WINDOW <= self.initial_connection_window <= MAX_WINDOW:
            raise ValueError(
                f"initial_connection_window={self.initial_connection_window} must be in "
                f"{DEFAULT_INITIAL_WINDOW}..{MAX_WINDOW} (HTTP/2 can only grow it from 65535)"
            )
        if not DEFAULT_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(
                f"max_frame_size={self.max_frame_size} must be in "
                f"{DEFAULT_MAX_FRAME_SIZE}..{MAX_FRAME_SIZE_LIMIT}"
            )
        if not 0 <= self.max_concurrent_streams <= 2**31 - 1:
            raise ValueError(f"max_concurrent_streams={self.max_concurrent_streams} out of range")
        if not 1024 <= self.max_header_list_size <= 2**31 - 1:
            raise ValueError(
                f"max_header_list_size={self.max_header_list_size} must be at least 1024"
            )

    def to_wire(self) -> list[tuple[int, int]]:
        """The (identifier, value) pairs of our SETTINGS frame, push disabled."""
        return [
            (SettingCode.ENABLE_PUSH, 0),
            (SettingCode.MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (SettingCode.INITIAL_WINDOW_SIZE, self.initial_stream_window),
            (SettingCode.MAX_FRAME_SIZE, self.max_frame_size),
            (SettingCode.MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]


@dataclasses.dataclass(slots=True)
class PeerSettings:
    """The peer's advertised values (RFC 9113 defaults until its SETTINGS frame arrives)."""

    header_table_size: int = 4096
    enable_push: int = 1
    max_concurrent_streams: int | None = None  # None = unlimited
    initial_window_size: int = DEFAULT_INITIAL_WINDOW
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_header_list_size: int | None = None  # None = unlimited
