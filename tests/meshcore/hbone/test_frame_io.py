"""Every frame type parsed whole, byte by byte, and followed by the start of another frame."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meshcore.hbone import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    HboneConnection,
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
from tests.meshcore.hbone.helpers import Pair, literal_block, merge_data, raw_frame

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WU, CONT = range(10)
CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.3:80")]
PING_FRAME = raw_frame(PING, 0, 0, b"trailing")


def server_with_tunnel() -> HboneConnection:
    """A server core with stream 1 answered 200 and all handshake bytes consumed."""
    pair = Pair()
    pair.handshake()
    pair.open_tunnel()
    pair.server.data_to_send()
    return pair.server


def client_awaiting_response() -> HboneConnection:
    """A client core that sent CONNECT on stream 1 and waits for the response."""
    pair = Pair()
    pair.handshake()
    pair.client.open_connect("10.0.0.2:80")
    pair.client.data_to_send()
    return pair.client


def d(sid: int, payload: bytes) -> DataReceived:
    return DataReceived(sid, memoryview(payload), len(payload))


SERVER_CASES = [
    pytest.param(raw_frame(DATA, 0, 1, b"hello"), [d(1, b"hello")], id="DATA"),
    pytest.param(
        raw_frame(DATA, 1, 1, b"bye"), [d(1, b"bye"), StreamEnded(1)], id="DATA END_STREAM"
    ),
    pytest.param(raw_frame(DATA, 1, 1), [StreamEnded(1)], id="empty DATA END_STREAM"),
    pytest.param(raw_frame(DATA, 0x8, 1, b"\x03abc\0\0\0"), [d(1, b"abc")], id="DATA padded"),
    pytest.param(
        raw_frame(DATA, 0x9, 1, b"\x02\0\0"), [StreamEnded(1)], id="DATA only padding END_STREAM"
    ),
    pytest.param(
        raw_frame(HEADERS, 0x4, 3, literal_block(CONNECT)),
        [RequestReceived(3, "CONNECT", "10.0.0.3:80", ())],
        id="HEADERS",
    ),
    pytest.param(
        raw_frame(
            HEADERS,
            0x4 | 0x8 | 0x20 | 0x1,
            3,
            b"\x02" + b"\x00\x00\x00\x01\x10" + literal_block(CONNECT) + b"\0\0",
        ),
        [RequestReceived(3, "CONNECT", "10.0.0.3:80", ()), StreamEnded(3)],
        id="HEADERS padded priority END_STREAM",
    ),
    pytest.param(
        raw_frame(HEADERS, 0, 3, literal_block(CONNECT)[:5])
        + raw_frame(CONT, 0, 3, literal_block(CONNECT)[5:12])
        + raw_frame(CONT, 0x4, 3, literal_block(CONNECT)[12:]),
        [RequestReceived(3, "CONNECT", "10.0.0.3:80", ())],
        id="HEADERS + CONTINUATION x2",
    ),
    pytest.param(raw_frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x20"), [], id="PRIORITY"),
    pytest.param(raw_frame(PRIORITY, 0, 9, b"\x00\x00\x00\x00\x20"), [], id="PRIORITY idle"),
    pytest.param(
        raw_frame(RST, 0, 1, b"\x00\x00\x00\x08"),
        [StreamReset(1, ErrorCode.CANCEL, remote=True)],
        id="RST_STREAM",
    ),
    pytest.param(
        raw_frame(RST, 0, 1, b"\x00\x00\x01\x00"),
        [StreamReset(1, 0x100, remote=True)],
        id="RST_STREAM unknown code",
    ),
    pytest.param(
        raw_frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00\x03\xe8\x00\xff\x00\x00\x00\x01"),
        [RemoteSettingsChanged({4: 1000, 255: 1}), WindowUpdated(0)],
        id="SETTINGS",
    ),
    pytest.param(raw_frame(SETTINGS, 1, 0), [SettingsAcknowledged()], id="SETTINGS ACK"),
    pytest.param(raw_frame(PING, 0, 0, b"12345678"), [PingReceived(b"12345678")], id="PING"),
    pytest.param(
        raw_frame(PING, 1, 0, b"abcdefgh"), [PingAcknowledged(b"abcdefgh")], id="PING ACK"
    ),
    pytest.param(
        raw_frame(GOAWAY, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00bye"),
        [ConnectionTerminated(ErrorCode.NO_ERROR, 1, b"bye")],
        id="GOAWAY",
    ),
    pytest.param(
        raw_frame(WU, 0, 0, b"\x00\x00\x10\x00"), [WindowUpdated(0)], id="WINDOW_UPDATE connection"
    ),
    pytest.param(
        raw_frame(WU, 0, 1, b"\x00\x00\x10\x00"), [WindowUpdated(1)], id="WINDOW_UPDATE stream"
    ),
    pytest.param(raw_frame(0xFA, 0xFF, 1, b"whatever"), [], id="unknown type"),
]

CLIENT_CASES = [
    pytest.param(
        raw_frame(HEADERS, 0x4, 1, literal_block([(":status", "200"), ("x", "y")])),
        [ResponseReceived(1, 200, (("x", "y"),))],
        id="response HEADERS",
    ),
    pytest.param(
        raw_frame(HEADERS, 0x4, 1, literal_block([(":status", "100")]))
        + raw_frame(HEADERS, 0x5, 1, literal_block([(":status", "503")])),
        [ResponseReceived(1, 503, ()), StreamEnded(1)],
        id="interim then 503",
    ),
]


def check_three_ways(
    make: Callable[[], HboneConnection], wire: bytes, expected: list[object]
) -> None:
    whole = make()
    assert merge_data(whole.receive_data(wire)) == expected
    bytewise = make()
    events = []
    for i in range(len(wire)):
        events += bytewise.receive_data(wire[i : i + 1])
    assert merge_data(events) == expected
    trailing = make()
    assert merge_data(trailing.receive_data(wire + PING_FRAME[:5])) == expected
    assert trailing.receive_data(PING_FRAME[5:]) == [PingReceived(b"trailing")]


@pytest.mark.parametrize(("wire", "expected"), SERVER_CASES)
def test_server_parses_frame(wire: bytes, expected: list[object]) -> None:
    """The server core decodes the frame identically whole, byte by byte and with trailing data."""
    check_three_ways(server_with_tunnel, wire, expected)


@pytest.mark.parametrize(("wire", "expected"), CLIENT_CASES)
def test_client_parses_frame(wire: bytes, expected: list[object]) -> None:
    """The client core decodes the frame identically whole, byte by byte and with trailing data."""
    check_three_ways(client_awaiting_response, wire, expected)


def test_client_preface_byte_by_byte() -> None:
    """The server accepts the client preface and SETTINGS fed one byte at a time."""
    pair = Pair()
    pair.client.initiate()
    pair.server.initiate()
    wire = b"".join(bytes(b) for b in pair.client.data_to_send())
    events = []
    for i in range(len(wire)):
        events += pair.server.receive_data(wire[i : i + 1])
    assert isinstance(events[0], RemoteSettingsChanged)


def test_data_payload_is_not_copied() -> None:
    """A 1 MiB DATA frame read in 256 KiB chunks arrives as views of those very chunks."""
    server = server_with_tunnel()
    payload = bytes(range(256)) * 4096
    wire = raw_frame(DATA, 0, 1, payload)
    chunks = [wire[i : i + 256 * 1024] for i in range(0, len(wire), 256 * 1024)]
    received = []
    for chunk in chunks:
        for ev in server.receive_data(chunk):
            assert isinstance(ev, DataReceived)
            assert ev.data.obj is chunk
            received.append(bytes(ev.data))
    assert b"".join(received) == payload
    assert server._reader.buffered == 0
