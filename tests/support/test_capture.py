"""The AF_PACKET sniffer: frame parsing, reassembly, TLS record parsing, a real capture."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest

from tests.support.capture import (
    CaptureError,
    FlowKey,
    PacketCapture,
    Segment,
    parse_frame,
    reassemble,
    tls_records,
)
from tests.support.echo import EchoServer, echo_roundtrip, random_payload
from tests.support.netns import NetnsPair

KEY = FlowKey("10.0.0.1", 1000, "10.0.0.2", 2000)


def _ipv4_tcp_frame(payload: bytes, seq: int, flags: int = 0x18) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 1000, 2000, seq, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0,
                     socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload + b"\0" * 4


def test_parse_frame_ipv4() -> None:
    """An Ethernet/IPv4/TCP frame yields its flow, sequence number and exact payload."""
    segment = parse_frame(_ipv4_tcp_frame(b"hello", seq=7))
    assert segment == Segment(KEY, 7, False, b"hello")


def test_parse_frame_ignores_non_tcp() -> None:
    """ARP and other ethertypes are not TCP segments."""
    assert parse_frame(b"\xff" * 12 + b"\x08\x06" + b"\0" * 28) is None


@pytest.mark.parametrize(
    ("segments", "data", "holes"),
    [
        pytest.param([(99, True, b""), (100, False, b"ab"), (102, False, b"cd")], b"abcd", 0,
                     id="in order"),
        pytest.param([(99, True, b""), (102, False, b"cd"), (100, False, b"ab")], b"abcd", 0,
                     id="reordered"),
        pytest.param([(99, True, b""), (100, False, b"ab"), (100, False, b"ab"),
                      (101, False, b"bcd")], b"abcd", 0, id="retransmitted and overlapping"),
        pytest.param([(99, True, b""), (100, False, b"ab"), (104, False, b"ef")],
                     b"ab\0\0ef", 1, id="hole"),
        pytest.param([(2**32 - 1, True, b""), (0, False, b"ab"), (2, False, b"c")], b"abc", 0,
                     id="sequence wraps"),
    ],
)
def test_reassemble(segments: list[tuple[int, bool, bytes]], data: bytes, holes: int) -> None:
    """Segments are ordered from the SYN; duplicates vanish; missing bytes count as holes."""
    flow = reassemble(KEY, [Segment(KEY, seq, syn, p) for seq, syn, p in segments])
    assert (flow.data, flow.holes, flow.complete) == (data, holes, holes == 0)


def test_tls_records_accepts_records_and_reports_cut_tail() -> None:
    """A handshake record, an application record and 3 bytes of a cut record parse as such."""
    data = b"\x16\x03\x01\x00\x02ab" + b"\x17\x03\x03\x00\x01z" + b"\x17\x03\x03"
    records, tail = tls_records(data)
    assert [(r.content_type, r.length) for r in records] == [(0x16, 2), (0x17, 1)]
    assert tail == 3


def test_tls_records_rejects_plaintext() -> None:
    """Plaintext (an HTTP request) is not a TLS record stream."""
    with pytest.raises(CaptureError, match="byte 0 is not a TLS record"):
        tls_records(b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.netns
def test_plain_tcp_marker_is_seen(
    netns_pair: NetnsPair, echo_factory: Callable[..., EchoServer]
) -> None:
    """Plaintext TCP between two namespaces shows the marker in both directions of the capture."""
    pair = netns_pair
    marker = b"PLAINTEXT-MARKER-7f3a"
    payload = random_payload(1024 * 1024, marker)
    echo = echo_factory(pair.ip_b, 0, netns=pair.b)
    with PacketCapture(pair.if_b, netns=pair.b, hosts=(pair.ip_a, pair.ip_b)) as capture:
        with pair.a.enter():
            sock = socket.create_connection(echo.address, timeout=10)
        with sock:
            assert echo_roundtrip(sock, payload) == payload
    assert capture.lossless
    flows = capture.flows()
    assert len(flows) == 2
    for flow in flows.values():
        assert flow.complete, f"{flow.key}: {flow.holes} holes"
        assert flow.data == payload
        assert marker in flow.data
