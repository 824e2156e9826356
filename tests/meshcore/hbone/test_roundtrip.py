"""CONNECT tunnels between our client and server cores: handshake, data, close, reset, GOAWAY."""

from __future__ import annotations

import pytest

from meshcore.hbone import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    HboneConnection,
    HboneSettings,
    LocalProtocolError,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    Role,
    SettingsAcknowledged,
    StreamClosedError,
    StreamEnded,
    StreamReset,
    TooManyStreamsError,
    WindowUpdated,
)
from tests.meshcore.hbone.helpers import Pair, pending


def data_of(events: list[object], stream_id: int) -> bytes:
    return b"".join(
        bytes(e.data) for e in events if isinstance(e, DataReceived) and e.stream_id == stream_id
    )


def test_handshake_exact_bytes() -> None:
    """The client sends the preface, SETTINGS (push off, ztunnel values) and a connection
    WINDOW_UPDATE up to 16 MiB; both sides then see each other's settings and acks."""
    pair = Pair()
    pair.client.initiate()
    pair.server.initiate()
    wire = pending(pair.client)
    assert wire == (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + bytes.fromhex("00001e040000000000")
        + bytes.fromhex("000200000000000300000064000400400000000500100000000600010000")
        + bytes.fromhex("000004080000000000")
        + (16 * 1024 * 1024 - 65535).to_bytes(4, "big")
    )
    server_events = pair.server.receive_data(wire)
    assert server_events == [
        RemoteSettingsChanged({2: 0, 3: 100, 4: 4 << 20, 5: 1 << 20, 6: 64 << 10}),
        WindowUpdated(0),
        WindowUpdated(0),
    ]
    client_events, server_events = pair.drain()
    assert SettingsAcknowledged() in client_events
    assert SettingsAcknowledged() in server_events
    assert pair.client.peer.initial_window_size == 4 << 20
    assert pair.client.statistics().connection_send_window == 16 << 20


def test_connect_request_and_200() -> None:
    """A CONNECT carries only :method and :authority plus extra headers; 200 reaches the client."""
    pair = Pair()
    pair.handshake()
    sid = pair.client.open_connect(
        "10.0.0.2:8080", [("baggage", "k8s.namespace.name=shop"), ("forwarded", 'for="1.2.3.4"')]
    )
    assert sid == 1
    assert pair.xfer(pair.client) == [
        RequestReceived(
            1,
            "CONNECT",
            "10.0.0.2:8080",
            (("baggage", "k8s.namespace.name=shop"), ("forwarded", 'for="1.2.3.4"')),
        )
    ]
    pair.server.respond(sid, 200, [("baggage", "k8s.namespace.name=db")])
    assert pair.xfer(pair.server) == [
        ResponseReceived(1, 200, (("baggage", "k8s.namespace.name=db"),))
    ]
    assert pair.client.open_streams() == pair.server.open_streams() == 1


def test_data_both_ways_and_half_close_both_ways() -> None:
    """Bytes flow both ways; each side half-closes independently and the stream then closes."""
    pair = Pair()
    pair.handshake()
    sid = pair.open_tunnel()
    assert pair.client.send_data(sid, b"ping " * 1000) == 5000
    events = pair.xfer(pair.client)
    assert data_of(events, sid) == b"ping " * 1000
    assert pair.server.send_data(sid, memoryview(b"pong"), end_stream=True) == 4
    events = pair.xfer(pair.server)
    assert data_of(events, sid) == b"pong"
    assert events[-1] == StreamEnded(sid)
    # The server's direction is closed; the client can still send.
    with pytest.raises(StreamClosedError):
        pair.server.send_data(sid, b"late")
    pair.client.send_data(sid, b"tail")
    pair.client.end_stream(sid)
    events = pair.xfer(pair.client)
    assert data_of(events, sid) == b"tail"
    assert events[-1] == StreamEnded(sid)
    assert pair.client.open_streams() == pair.server.open_streams() == 0


def test_client_half_close_first() -> None:
    """The client half-closes first; the server keeps sending until it half-closes too."""
    pair = Pair()
    pair.handshake()
    sid = pair.open_tunnel()
    pair.client.end_stream(sid)
    assert pair.xfer(pair.client) == [StreamEnded(sid)]
    pair.server.send_data(sid, b"reply", end_stream=True)
    events = pair.xfer(pair.server)
    assert data_of(events, sid) == b"reply" and events[-1] == StreamEnded(sid)
    assert pair.client.open_streams() == 0


def test_reset_from_client() -> None:
    """reset_stream sends RST_STREAM; the server sees StreamReset(remote=True) with the code."""
    pair = Pair()
    pair.handshake()
    sid = pair.open_tunnel()
    pair.client.reset_stream(sid)
    assert pair.xfer(pair.client) == [StreamReset(sid, ErrorCode.CANCEL, remote=True)]
    assert pair.server.open_streams() == 0
    pair.client.reset_stream(sid)  # already closed: a no-op
    assert pair.client.bytes_to_send() == 0
    assert pair.server.statistics().streams_reset_remote == 1


def test_error_response_with_end_stream() -> None:
    """A 401 with END_STREAM closes the server's side; the client sees the status then the end."""
    pair = Pair()
    pair.handshake()
    sid = pair.client.open_connect("10.0.0.9:80")
    pair.xfer(pair.client)
    pair.server.respond(sid, 401, end_stream=True)
    assert pair.xfer(pair.server) == [ResponseReceived(sid, 401, ()), StreamEnded(sid)]


def test_many_concurrent_streams_interleaved() -> None:
    """Fifty tunnels on one connection keep their bytes apart."""
    pair = Pair()
    pair.handshake()
    sids = [pair.open_tunnel(f"10.0.1.{i}:80") for i in range(50)]
    assert sids == list(range(1, 101, 2))
    for round_ in range(3):
        for sid in sids:
            pair.client.send_data(sid, f"{sid}:{round_};".encode())
    events = pair.xfer(pair.client)
    for sid in sids:
        assert data_of(events, sid) == b"".join(f"{sid}:{r};".encode() for r in range(3))
    assert pair.server.open_streams() == 50


def test_peer_concurrency_limit() -> None:
    """The client honours the server's SETTINGS_MAX_CONCURRENT_STREAMS and can open again once
    a stream closes."""
    pair = Pair(server_settings=HboneSettings(max_concurrent_streams=2))
    pair.handshake()
    a = pair.open_tunnel()
    pair.open_tunnel()
    assert not pair.client.can_open_stream
    with pytest.raises(TooManyStreamsError, match="2 concurrent streams"):
        pair.client.open_connect("10.0.0.2:80")
    pair.client.reset_stream(a)
    assert pair.client.can_open_stream


def test_server_refuses_streams_over_its_limit() -> None:
    """A peer that ignores our limit gets RST_STREAM(REFUSED_STREAM) on the extra stream only."""
    pair = Pair(server_settings=HboneSettings(max_concurrent_streams=1))
    pair.handshake()
    pair.open_tunnel()
    pair.client.peer.max_concurrent_streams = None  # make the client ignore the limit
    sid = pair.client.open_connect("10.0.0.3:80")
    events = pair.xfer(pair.client)
    assert events == [
        StreamReset(
            sid,
            ErrorCode.REFUSED_STREAM,
            remote=False,
            reason="over our SETTINGS_MAX_CONCURRENT_STREAMS",
        )
    ]
    assert pair.xfer(pair.server) == [StreamReset(sid, ErrorCode.REFUSED_STREAM, remote=True)]
    assert pair.server.open_streams() == 1


def test_ping_round_trip() -> None:
    """PING is auto-acknowledged with the same opaque bytes."""
    pair = Pair()
    pair.handshake()
    pair.client.ping(b"12345678")
    assert pair.xfer(pair.client) == [PingReceived(b"12345678")]
    assert pair.xfer(pair.server) == [PingAcknowledged(b"12345678")]


def test_goaway_refuses_newer_streams() -> None:
    """GOAWAY tells the client which streams the server processed; newer ones are reset as
    REFUSED_STREAM so they can be retried, older ones keep working."""
    pair = Pair()
    pair.handshake()
    done = pair.open_tunnel()
    late = pair.client.open_connect("10.0.0.3:80")  # not yet seen by the server
    pair.server.close()
    events = pair.xfer(pair.server)
    assert events == [
        ConnectionTerminated(ErrorCode.NO_ERROR, done, b""),
        StreamReset(
            late,
            ErrorCode.REFUSED_STREAM,
            remote=True,
            reason="above the peer's GOAWAY last_stream_id",
        ),
    ]
    assert not pair.client.can_open_stream
    pair.client.send_data(done, b"still fine")
    events = pair.xfer(pair.client)  # carries the late HEADERS too: refused by the server
    assert events[0] == StreamReset(
        late, ErrorCode.REFUSED_STREAM, remote=False, reason="after our GOAWAY"
    )
    assert data_of(events, done) == b"still fine"
    assert pair.client.statistics().goaway_received


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(lambda c: c.respond(1, 200), LocalProtocolError, id="client responds"),
        pytest.param(lambda c: c.send_data(7, b"x"), StreamClosedError, id="unknown stream"),
        pytest.param(
            lambda c: c.open_connect("bad authority"), LocalProtocolError, id="space in authority"
        ),
        pytest.param(
            lambda c: c.open_connect("h:1", [(":path", "/")]),
            LocalProtocolError,
            id="pseudo header from caller",
        ),
        pytest.param(
            lambda c: c.open_connect("h:1", [("Upper", "x")]),
            LocalProtocolError,
            id="uppercase header",
        ),
        pytest.param(
            lambda c: c.open_connect("h:1", [("connection", "close")]),
            LocalProtocolError,
            id="connection-specific header",
        ),
        pytest.param(lambda c: c.ping(b"short"), LocalProtocolError, id="short ping"),
        pytest.param(lambda c: c.initiate(), LocalProtocolError, id="initiate twice"),
    ],
)
def test_api_misuse_raises_local_error(call: object, error: type[Exception]) -> None:
    """Misusing the API raises a LocalProtocolError subclass and queues nothing."""
    pair = Pair()
    pair.handshake()
    with pytest.raises(error):
        call(pair.client)  # type: ignore[operator]
    assert pair.client.bytes_to_send() == 0


def test_server_must_respond_before_data() -> None:
    """The server cannot send tunnel bytes before its response."""
    pair = Pair()
    pair.handshake()
    sid = pair.client.open_connect("10.0.0.2:80")
    pair.xfer(pair.client)
    with pytest.raises(LocalProtocolError, match="respond"):
        pair.server.send_data(sid, b"x")


def test_receive_before_initiate_is_misuse() -> None:
    """receive_data before initiate() is a caller bug, not silently accepted."""
    with pytest.raises(LocalProtocolError):
        HboneConnection(Role.SERVER).receive_data(b"PRI")
