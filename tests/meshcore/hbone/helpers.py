"""Test helpers for the HBONE core: a client/server pair joined in memory, plus h2 peers.

`Pair` follows h11's ConnectionPair and h2's `_xfer_once` / `_drain_events`: bytes queued on one
side are fed to the other, events are collected per side. `xfer` joins the outgoing buffers into
one fresh `bytes` per call (as a socket would), so DataReceived views stay valid.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.settings
import hyperframe.frame

from meshcore.hbone import DataReceived, Event, HboneConnection, HboneSettings, Role


def pending(conn: HboneConnection) -> bytes:
    """Everything `conn` has queued, joined (empties its queue)."""
    return b"".join(bytes(b) for b in conn.data_to_send())


class Pair:
    """An HBONE client and server core joined by an in-memory link."""

    def __init__(
        self,
        client_settings: HboneSettings | None = None,
        server_settings: HboneSettings | None = None,
    ) -> None:
        self.client = HboneConnection(Role.CLIENT, client_settings or HboneSettings())
        self.server = HboneConnection(Role.SERVER, server_settings or HboneSettings())

    def peer(self, conn: HboneConnection) -> HboneConnection:
        return self.server if conn is self.client else self.client

    def xfer(self, src: HboneConnection) -> list[Event]:
        """Move what `src` queued to its peer; return the peer's events."""
        data = pending(src)
        return self.peer(src).receive_data(data) if data else []

    def drain(self) -> tuple[list[Event], list[Event]]:
        """Shuttle bytes both ways until both are quiet; return (client events, server events)."""
        client_events: list[Event] = []
        server_events: list[Event] = []
        while self.client.bytes_to_send() or self.server.bytes_to_send():
            server_events += self.xfer(self.client)
            client_events += self.xfer(self.server)
        return client_events, server_events

    def handshake(self) -> None:
        """Preface and SETTINGS both ways, acknowledged."""
        self.client.initiate()
        self.server.initiate()
        self.drain()

    def open_tunnel(self, authority: str = "10.0.0.2:8080") -> int:
        """A CONNECT stream answered 200; returns its id."""
        sid = self.client.open_connect(authority)
        self.xfer(self.client)
        self.server.respond(sid, 200)
        self.xfer(self.server)
        return sid


def h2_peer(*, client_side: bool, **settings: int) -> h2.connection.H2Connection:
    """An initiated h2 connection (independent implementation) with str headers."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8")
    )
    if settings:
        conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
    conn.initiate_connection()
    return conn


def raw_frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame built by hand (independent of the core's encoder)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([ftype, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


def literal_block(fields: list[tuple[str, str]]) -> bytes:
    """An HPACK block of literals without indexing and without Huffman (leaves tables alone)."""
    out = bytearray()
    for name, value in fields:
        n, v = name.encode(), value.encode()
        assert len(n) < 127 and len(v) < 127
        out += b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
    return bytes(out)


def parse_frames(data: bytes) -> list[hyperframe.frame.Frame]:
    """Parse a byte string into frames with hyperframe (an independent decoder)."""
    out = []
    pos = 0
    while pos < len(data):
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
        frame.parse_body(memoryview(data[pos + 9 : pos + 9 + length]))
        out.append(frame)
        pos += 9 + length
    return out


def merge_data(events: list[Event]) -> list[object]:
    """Events with consecutive DataReceived of one stream merged (split points vary by input)."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, DataReceived):
            prev = out[-1] if out else None
            if isinstance(prev, DataReceived) and prev.stream_id == ev.stream_id:
                merged = bytes(prev.data) + bytes(ev.data)
                ev = DataReceived(ev.stream_id, memoryview(merged), len(merged))
                out[-1] = ev
                continue
            ev = DataReceived(ev.stream_id, memoryview(bytes(ev.data)), ev.flow_controlled_length)
        out.append(ev)
    return out
