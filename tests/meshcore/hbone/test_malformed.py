"""Malformed input: connection errors end in GOAWAY, stream errors in RST_STREAM only."""

from __future__ import annotations

import hyperframe.frame
import pytest

from meshcore.hbone import (
    CompressionError,
    DataReceived,
    ErrorCode,
    FrameSizeError,
    HboneConnection,
    LocalProtocolError,
    RemoteProtocolError,
    RequestReceived,
    Role,
    StreamReset,
)
from tests.meshcore.hbone.helpers import Pair, literal_block, parse_frames, pending, raw_frame

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WU, CONT = range(10)
CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.3:80")]


def tunnel_pair() -> Pair:
    pair = Pair()
    pair.handshake()
    pair.open_tunnel()
    return pair


def last_goaway(conn: HboneConnection) -> hyperframe.frame.GoAwayFrame:
    frame = parse_frames(pending(conn))[-1]
    assert isinstance(frame, hyperframe.frame.GoAwayFrame)
    return frame


CONNECTION_ERRORS = [
    pytest.param(raw_frame(DATA, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR, id="DATA on stream 0"),
    pytest.param(raw_frame(DATA, 0, 7, b"x"), ErrorCode.PROTOCOL_ERROR, id="DATA on idle stream"),
    pytest.param(
        raw_frame(DATA, 0x8, 1, b"\x05abc"), ErrorCode.PROTOCOL_ERROR, id="DATA padding too long"
    ),
    pytest.param(
        b"\x10\x00\x01" + b"\x00\x00" + b"\x00\x00\x00\x01",
        ErrorCode.FRAME_SIZE_ERROR,
        id="frame over our max frame size",
    ),
    pytest.param(
        raw_frame(HEADERS, 0x4, 0, literal_block(CONNECT)),
        ErrorCode.PROTOCOL_ERROR,
        id="HEADERS on stream 0",
    ),
    pytest.param(
        raw_frame(HEADERS, 0x4, 4, literal_block(CONNECT)),
        ErrorCode.PROTOCOL_ERROR,
        id="HEADERS on an even stream",
    ),
    pytest.param(
        raw_frame(HEADERS, 0xC, 3, b"\xff" + literal_block(CONNECT)),
        ErrorCode.PROTOCOL_ERROR,
        id="HEADERS padding too long",
    ),
    pytest.param(
        raw_frame(HEADERS, 0x4, 3, b"\xff\xff\xff\xff"),
        ErrorCode.COMPRESSION_ERROR,
        id="HPACK garbage",
    ),
    pytest.param(
        raw_frame(HEADERS, 0, 3, literal_block(CONNECT)) + raw_frame(PING, 0, 0, b"8" * 8),
        ErrorCode.PROTOCOL_ERROR,
        id="PING interleaved in a header block",
    ),
    pytest.param(
        raw_frame(HEADERS, 0, 3, literal_block(CONNECT)[:4])
        + raw_frame(CONT, 0x4, 5, literal_block(CONNECT)[4:]),
        ErrorCode.PROTOCOL_ERROR,
        id="CONTINUATION on another stream",
    ),
    pytest.param(
        raw_frame(HEADERS, 0, 3, literal_block(CONNECT)[:4]) + raw_frame(DATA, 0, 1, b"x"),
        ErrorCode.PROTOCOL_ERROR,
        id="DATA interleaved in a header block",
    ),
    pytest.param(
        raw_frame(CONT, 0x4, 1, b""), ErrorCode.PROTOCOL_ERROR, id="CONTINUATION without HEADERS"
    ),
    pytest.param(
        raw_frame(PUSH, 0x4, 1, b"\x00\x00\x00\x02"), ErrorCode.PROTOCOL_ERROR, id="PUSH_PROMISE"
    ),
    pytest.param(
        raw_frame(PRIORITY, 0, 0, b"\x00" * 5), ErrorCode.PROTOCOL_ERROR, id="PRIORITY on stream 0"
    ),
    pytest.param(
        raw_frame(RST, 0, 1, b"\x00" * 3), ErrorCode.FRAME_SIZE_ERROR, id="RST_STREAM of 3 bytes"
    ),
    pytest.param(
        raw_frame(RST, 0, 9, b"\x00" * 4), ErrorCode.PROTOCOL_ERROR, id="RST_STREAM on idle stream"
    ),
    pytest.param(
        raw_frame(SETTINGS, 0, 0, b"\x00" * 5), ErrorCode.FRAME_SIZE_ERROR, id="SETTINGS of 5 bytes"
    ),
    pytest.param(
        raw_frame(SETTINGS, 1, 0, b"\x00" * 6),
        ErrorCode.FRAME_SIZE_ERROR,
        id="SETTINGS ACK with payload",
    ),
    pytest.param(
        raw_frame(SETTINGS, 0, 1, b""), ErrorCode.PROTOCOL_ERROR, id="SETTINGS on a stream"
    ),
    pytest.param(
        raw_frame(SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x02"),
        ErrorCode.PROTOCOL_ERROR,
        id="ENABLE_PUSH=2",
    ),
    pytest.param(
        raw_frame(SETTINGS, 0, 0, b"\x00\x05\x00\x00\x10\x00"),
        ErrorCode.PROTOCOL_ERROR,
        id="MAX_FRAME_SIZE below 16384",
    ),
    pytest.param(
        raw_frame(PING, 0, 0, b"1234567"), ErrorCode.FRAME_SIZE_ERROR, id="PING of 7 bytes"
    ),
    pytest.param(
        raw_frame(PING, 0, 1, b"12345678"), ErrorCode.PROTOCOL_ERROR, id="PING on a stream"
    ),
    pytest.param(
        raw_frame(GOAWAY, 0, 0, b"\x00" * 7), ErrorCode.FRAME_SIZE_ERROR, id="GOAWAY of 7 bytes"
    ),
    pytest.param(
        raw_frame(WU, 0, 0, b"\x00" * 4),
        ErrorCode.PROTOCOL_ERROR,
        id="connection WINDOW_UPDATE of 0",
    ),
    pytest.param(
        raw_frame(WU, 0, 1, b"\x00" * 3), ErrorCode.FRAME_SIZE_ERROR, id="WINDOW_UPDATE of 3 bytes"
    ),
    pytest.param(
        raw_frame(WU, 0, 11, b"\x00\x00\x00\x01"),
        ErrorCode.PROTOCOL_ERROR,
        id="WINDOW_UPDATE on idle stream",
    ),
]


@pytest.mark.parametrize(("wire", "code"), CONNECTION_ERRORS)
def test_connection_errors(wire: bytes, code: ErrorCode) -> None:
    """The server raises RemoteProtocolError with the code, and its GOAWAY carries it."""
    pair = tunnel_pair()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(wire)
    assert info.value.error_code == code
    goaway = last_goaway(pair.server)
    assert goaway.error_code == code
    assert goaway.last_stream_id == 1
    assert pair.server.receive_data(raw_frame(PING, 0, 0, b"12345678")) == []
    with pytest.raises(LocalProtocolError):
        pair.server.send_data(1, b"x")


def test_bad_preface() -> None:
    """An HTTP/1.1 request instead of the preface is a PROTOCOL_ERROR with GOAWAY queued."""
    server = HboneConnection(Role.SERVER)
    server.initiate()
    server.data_to_send()
    with pytest.raises(RemoteProtocolError, match="preface"):
        server.receive_data(b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n\r\n")
    assert last_goaway(server).error_code == ErrorCode.PROTOCOL_ERROR


def test_first_frame_must_be_settings() -> None:
    """After the preface, anything but SETTINGS is a PROTOCOL_ERROR."""
    server = HboneConnection(Role.SERVER)
    server.initiate()
    with pytest.raises(RemoteProtocolError, match="not SETTINGS"):
        server.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + raw_frame(PING, 0, 0, b"8" * 8))


def test_error_keeps_events_decoded_before_it() -> None:
    """Events decoded before a connection error in the same call are attached to the error."""
    pair = tunnel_pair()
    with pytest.raises(FrameSizeError) as info:
        pair.server.receive_data(raw_frame(DATA, 0, 1, b"ok") + raw_frame(PING, 0, 0, b"short"))
    assert info.value.events == [DataReceived(1, memoryview(b"ok"), 2)]


def test_hpack_garbage_is_compression_error() -> None:
    """Undecodable header blocks raise CompressionError (the shared HPACK state is lost)."""
    pair = tunnel_pair()
    with pytest.raises(CompressionError):
        pair.server.receive_data(raw_frame(HEADERS, 0x4, 3, b"\xff\xff\xff\xff"))


BAD_REQUESTS = [
    pytest.param([*CONNECT, (":path", "/")], id="CONNECT with :path"),
    pytest.param([*CONNECT, (":scheme", "https")], id="CONNECT with :scheme"),
    pytest.param([(":method", "CONNECT")], id="CONNECT without :authority"),
    pytest.param([(":authority", "a:1")], id="no :method"),
    pytest.param([*CONNECT, (":method", "GET")], id="duplicate :method"),
    pytest.param([*CONNECT, (":status", "200")], id="response pseudo-header"),
    pytest.param([*CONNECT, (":protocol", "websocket")], id="extended CONNECT"),
    pytest.param(
        [(":method", "CONNECT"), ("x", "1"), (":authority", "a:1")],
        id="pseudo-header after regular",
    ),
    pytest.param([*CONNECT, ("Baggage", "x")], id="uppercase name"),
    pytest.param([*CONNECT, ("connection", "keep-alive")], id="connection header"),
    pytest.param([*CONNECT, ("te", "gzip")], id="te other than trailers"),
    pytest.param([*CONNECT, ("x", " padded")], id="value with leading space"),
    pytest.param([(":method", "GET"), (":authority", "a")], id="GET without :path"),
]


@pytest.mark.parametrize("fields", BAD_REQUESTS)
def test_malformed_request_resets_only_that_stream(fields: list[tuple[str, str]]) -> None:
    """A malformed request gets RST_STREAM(PROTOCOL_ERROR); the open tunnel keeps working."""
    pair = tunnel_pair()
    wire = raw_frame(HEADERS, 0x4, 3, literal_block(fields)) + raw_frame(DATA, 0, 1, b"alive")
    events = pair.server.receive_data(wire)
    assert isinstance(events[0], StreamReset)
    assert (events[0].stream_id, events[0].error_code, events[0].remote) == (
        3,
        ErrorCode.PROTOCOL_ERROR,
        False,
    )
    assert events[1] == DataReceived(1, memoryview(b"alive"), 5)
    rst = parse_frames(pending(pair.server))
    assert [(type(f).__name__, f.stream_id, f.error_code) for f in rst] == [
        ("RstStreamFrame", 3, ErrorCode.PROTOCOL_ERROR)
    ]


def test_non_connect_request_is_reported() -> None:
    """A well-formed GET is reported as RequestReceived so the adapter can answer 400."""
    pair = tunnel_pair()
    fields = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a")]
    assert pair.server.receive_data(raw_frame(HEADERS, 0x5, 3, literal_block(fields)))[0] == (
        RequestReceived(3, "GET", "a", (), "https", "/")
    )
    pair.server.respond(3, 400, end_stream=True)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(raw_frame(DATA, 0, 1, b"late"), id="DATA after END_STREAM"),
        pytest.param(raw_frame(HEADERS, 0x4, 1, literal_block(CONNECT)), id="HEADERS again"),
    ],
)
def test_frames_on_half_closed_stream(wire: bytes) -> None:
    """DATA or HEADERS after the peer's END_STREAM: RST_STREAM(STREAM_CLOSED), others unaffected."""
    pair = tunnel_pair()
    sid2 = pair.open_tunnel()
    pair.client.end_stream(1)
    pair.xfer(pair.client)
    events = pair.server.receive_data(wire + raw_frame(DATA, 0, sid2, b"fine"))
    assert isinstance(events[0], StreamReset) and events[0].error_code == ErrorCode.STREAM_CLOSED
    assert events[1] == DataReceived(sid2, memoryview(b"fine"), 4)


def test_data_on_closed_stream_and_after_our_reset() -> None:
    """DATA on a stream closed both ways gets STREAM_CLOSED; DATA on a stream we reset is
    silently dropped (it may have been in flight) and credited to the connection window."""
    pair = tunnel_pair()
    pair.client.end_stream(1)
    pair.xfer(pair.client)
    pair.server.end_stream(1)
    pair.xfer(pair.server)
    events = pair.server.receive_data(raw_frame(DATA, 0, 1, b"zombie"))
    assert [(e.stream_id, e.error_code) for e in events] == [(1, ErrorCode.STREAM_CLOSED)]
    sid = pair.open_tunnel()
    pair.server.reset_stream(sid)
    pending(pair.server)
    assert pair.server.receive_data(raw_frame(DATA, 0, sid, b"x" * 100)) == []
    assert pair.server.bytes_to_send() == 0


def test_second_headers_block_on_connect_stream() -> None:
    """Trailers (a second HEADERS) on an established CONNECT stream reset it (RFC 9113 §8.5)."""
    pair = tunnel_pair()
    events = pair.server.receive_data(raw_frame(HEADERS, 0x5, 1, literal_block([("x", "y")])))
    assert [(e.stream_id, e.error_code) for e in events] == [(1, ErrorCode.PROTOCOL_ERROR)]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([("x", "y")], id="no :status"),
        pytest.param([(":status", "2000")], id="four-digit status"),
        pytest.param([(":status", "200"), (":path", "/")], id="request pseudo-header"),
    ],
)
def test_malformed_response_resets_stream(fields: list[tuple[str, str]]) -> None:
    """The client resets a stream whose response is malformed."""
    pair = Pair()
    pair.handshake()
    sid = pair.client.open_connect("10.0.0.2:80")
    pending(pair.client)
    events = pair.client.receive_data(raw_frame(HEADERS, 0x4, sid, literal_block(fields)))
    assert [(type(e), e.error_code) for e in events] == [(StreamReset, ErrorCode.PROTOCOL_ERROR)]


def test_data_before_response_resets_stream() -> None:
    """DATA before the response HEADERS is a stream PROTOCOL_ERROR on the client."""
    pair = Pair()
    pair.handshake()
    sid = pair.client.open_connect("10.0.0.2:80")
    events = pair.client.receive_data(raw_frame(DATA, 0, sid, b"early"))
    assert [(e.stream_id, e.error_code) for e in events] == [(sid, ErrorCode.PROTOCOL_ERROR)]


def test_oversized_header_list_resets_stream() -> None:
    """A header list above our SETTINGS_MAX_HEADER_LIST_SIZE resets the stream only."""
    pair = tunnel_pair()
    fields = [*CONNECT] + [(f"h{i}", "v" * 100) for i in range(500)]
    block = b"".join(literal_block([f]) for f in fields)
    events = pair.server.receive_data(raw_frame(HEADERS, 0x4, 3, block))
    assert [(e.stream_id, e.error_code) for e in events] == [(3, ErrorCode.PROTOCOL_ERROR)]


def test_continuation_flood_is_refused() -> None:
    """An endless header block (CONTINUATION flood) ends the connection with ENHANCE_YOUR_CALM."""
    pair = tunnel_pair()
    wire = raw_frame(HEADERS, 0, 3, b"\x00" * 16_000)
    wire += b"".join(raw_frame(CONT, 0, 3, b"\x00" * 16_000) for _ in range(10))
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(wire)
    assert info.value.error_code == ErrorCode.ENHANCE_YOUR_CALM
