"""HTTP/2 frame codec (RFC 9113 §4 and §6): frame builders and the incremental `FrameReader`.

Called by `connection.py` only. Builders return the bytes of one frame (DATA frames are built by the
connection itself: a 9-byte header plus a view of the caller's buffer). `FrameReader.feed` turns
input buffers into a stream of parse items:

- `(K_FRAME, type, flags, stream_id, payload)`: a complete non-DATA frame. `payload` is a memoryview
  of the caller's buffer when the frame arrived whole, else `bytes` copied from the partial buffer.
  Either way the connection must copy what it keeps.
- `(K_DATA_HEAD, flags, stream_id, length)`: a DATA frame header (`length` counts padding; it is
  what flow control charges).
- `(K_DATA, view)`: a slice of DATA payload (padding stripped), a view of the caller's buffer.
  DATA payload is *streamed*: never buffered, never copied, one item per input buffer it spans.
- `(K_DATA_END, padding)`: the DATA frame is complete; `padding` bytes (pad length octet included)
  were charged to flow control but not delivered.

Invariants: only frame headers and non-DATA frames split across inputs are copied (into
`_partial`); the reader never holds a reference to an input buffer after `feed` is exhausted.
Connection-level framing errors (oversize frame, bad preface, padding longer than the frame) raise
a `RemoteProtocolError` subclass; the connection queues the GOAWAY.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import Any

from meshcore.hbone.errors import FrameSizeError, RemoteProtocolError

__all__ = [
    "CONNECTION_PREFACE",
    "HEADER",
    "K_DATA",
    "K_DATA_END",
    "K_DATA_HEAD",
    "K_FRAME",
    "U32",
    "U32_U32",
    "Flag",
    "FrameReader",
    "FrameType",
    "goaway_frame",
    "header_frames",
    "ping_frame",
    "rst_stream_frame",
    "settings_frame",
    "split_headers_payload",
    "window_update_frame",
]

CONNECTION_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# length (24 bits as 8 + 16), type, flags, stream id (the reserved top bit is masked by callers).
HEADER = struct.Struct(">BHBBL")
U32 = struct.Struct(">L")
_U16_U32 = struct.Struct(">HL")
U32_U32 = struct.Struct(">LL")

K_DATA = 0
K_DATA_HEAD = 1
K_DATA_END = 2
K_FRAME = 3


class FrameType(enum.IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag(enum.IntFlag):
    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return HEADER.pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def settings_frame(pairs: list[tuple[int, int]], *, ack: bool = False) -> bytes:
    """A SETTINGS frame (or its ACK, which must be empty)."""
    payload = b"".join(_U16_U32.pack(k, v) for k, v in pairs)
    return _frame(FrameType.SETTINGS, Flag.ACK if ack else 0, 0, payload)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return _frame(FrameType.WINDOW_UPDATE, 0, stream_id, U32.pack(increment))


def ping_frame(opaque: bytes, *, ack: bool = False) -> bytes:
    return _frame(FrameType.PING, Flag.ACK if ack else 0, 0, opaque)


def goaway_frame(last_stream_id: int, error_code: int, additional_data: bytes = b"") -> bytes:
    return _frame(
        FrameType.GOAWAY, 0, 0, U32_U32.pack(last_stream_id, error_code) + additional_data
    )


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return _frame(FrameType.RST_STREAM, 0, stream_id, U32.pack(error_code))


def header_frames(stream_id: int, block: bytes, *, end_stream: bool, max_frame: int) -> list[bytes]:
    """HEADERS plus as many CONTINUATION frames as `max_frame` (the peer's limit) requires."""
    chunks = [block[i : i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        ftype = FrameType.HEADERS if i == 0 else FrameType.CONTINUATION
        flags = Flag.END_STREAM if (i == 0 and end_stream) else 0
        if i == len(chunks) - 1:
            flags |= Flag.END_HEADERS
        out.append(_frame(ftype, flags, stream_id, chunk))
    return out


def split_headers_payload(
    flags: int, payload: memoryview | bytes, stream_id: int
) -> tuple[memoryview, int | None]:
    """Strip padding and the priority fields from a HEADERS payload (RFC 9113 §6.2).

    Returns the header block fragment and the stream dependency (None without the PRIORITY flag).
    Padding as long as the frame is a connection error PROTOCOL_ERROR.
    """
    view = memoryview(payload)
    start, end = 0, len(view)
    if flags & Flag.PADDED:
        if end < 1:
            raise RemoteProtocolError("padded HEADERS without a pad length", stream_id=stream_id)
        start = 1
        end -= view[0]
    dependency = None
    if flags & Flag.PRIORITY:
        if end - start < 5:
            raise FrameSizeError("HEADERS too short for its priority fields", stream_id=stream_id)
        dependency = U32.unpack_from(view, start)[0] & 0x7FFFFFFF
        start += 5
    if end < start:
        raise RemoteProtocolError("HEADERS padding exceeds the frame", stream_id=stream_id)
    return view[start:end], dependency


class FrameReader:
    """Incremental frame parser; see the module docstring for the items it yields."""

    __slots__ = (
        "_data_left",
        "_frame",
        "_in_data",
        "_pad_left",
        "_pad_pending",
        "_pad_total",
        "_partial",
        "_preface_left",
        "max_frame_size",
    )

    def __init__(self, max_frame_size: int, *, expect_preface: bool) -> None:
        self.max_frame_size = max_frame_size
        self._preface_left = CONNECTION_PREFACE if expect_preface else b""
        self._partial = bytearray()
        self._frame: tuple[int, int, int, int] = (0, 0, 0, 0)  # header kept while buffering
        self._in_data = False
        self._data_left = 0
        self._pad_left = 0
        self._pad_pending = False
        self._pad_total = 0

    def _head(
        self, hi: int, lo: int, ftype: int, flags: int, sid: int
    ) -> tuple[int, int, int, int]:
        length = hi << 16 | lo
        sid &= 0x7FFFFFFF
        if length > self.max_frame_size:
            raise FrameSizeError(
                f"frame of {length} bytes (type {ftype}) exceeds our SETTINGS_MAX_FRAME_SIZE "
                f"{self.max_frame_size}",
                stream_id=sid or None,
            )
        if ftype == FrameType.DATA:
            self._in_data = True
            self._data_left = length
            self._pad_pending = bool(flags & Flag.PADDED)
            self._pad_left = 0
            self._pad_total = 0
            if self._pad_pending and length == 0:
                raise FrameSizeError("padded DATA frame without a pad length", stream_id=sid)
        return (length, ftype, flags, sid)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[tuple[Any, ...]]:
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        pos, end = 0, len(mv)
        if self._preface_left:
            n = min(len(self._preface_left), end)
            if bytes(mv[:n]) != self._preface_left[:n]:
                raise RemoteProtocolError(
                    "invalid HTTP/2 client preface (is the client speaking HTTP/1.1, or without "
                    "ALPN h2?)"
                )
            self._preface_left = self._preface_left[n:]
            pos = n
        partial = self._partial
        while pos < end:
            if self._in_data:
                if self._pad_pending:
                    padlen = mv[pos]
                    pos += 1
                    self._pad_pending = False
                    if padlen >= self._data_left:
                        raise RemoteProtocolError("DATA padding exceeds the frame")
                    self._data_left -= 1 + padlen
                    self._pad_left = padlen
                    self._pad_total = 1 + padlen
                    continue
                if self._data_left:
                    take = min(self._data_left, end - pos)
                    yield (K_DATA, mv[pos : pos + take])
                    pos += take
                    self._data_left -= take
                    continue
                if self._pad_left:
                    take = min(self._pad_left, end - pos)
                    pos += take
                    self._pad_left -= take
                    continue
                self._in_data = False
                yield (K_DATA_END, self._pad_total)
                continue
            if partial:
                if len(partial) < 9:
                    take = min(9 - len(partial), end - pos)
                    partial += mv[pos : pos + take]
                    pos += take
                    if len(partial) < 9:
                        break
                    self._frame = head = self._head(*HEADER.unpack_from(partial))
                    if head[1] == FrameType.DATA:
                        partial.clear()
                        yield (K_DATA_HEAD, head[2], head[3], head[0])
                        continue
                length, ftype, flags, sid = self._frame
                take = min(9 + length - len(partial), end - pos)
                partial += mv[pos : pos + take]
                pos += take
                if len(partial) < 9 + length:
                    break
                payload = bytes(partial[9:])
                partial.clear()
                yield (K_FRAME, ftype, flags, sid, payload)
                continue
            if end - pos < 9:
                partial += mv[pos:end]
                break
            length, ftype, flags, sid = self._head(*HEADER.unpack_from(mv, pos))
            if ftype == FrameType.DATA:
                pos += 9
                yield (K_DATA_HEAD, flags, sid, length)
                continue
            if end - pos - 9 >= length:
                yield (K_FRAME, ftype, flags, sid, mv[pos + 9 : pos + 9 + length])
                pos += 9 + length
                continue
            self._frame = (length, ftype, flags, sid)
            partial += mv[pos:end]
            break
        # A DATA frame that ends exactly at the end of the input still needs its K_DATA_END.
        if self._in_data and not (self._data_left or self._pad_left or self._pad_pending):
            self._in_data = False
            yield (K_DATA_END, self._pad_total)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame header or control frame held (for tests and statistics)."""
        return len(self._partial)
