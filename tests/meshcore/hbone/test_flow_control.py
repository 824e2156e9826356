"""Flow control both ways: blocking, resuming, batched WINDOW_UPDATEs, SETTINGS, overflow."""

from __future__ import annotations

import hyperframe.frame
import pytest

from meshcore.hbone import (
    DataReceived,
    ErrorCode,
    FlowControlError,
    HboneSettings,
    StreamReset,
    WindowUpdated,
)
from tests.meshcore.hbone.helpers import Pair, parse_frames, pending, raw_frame

SMALL = HboneSettings(
    initial_stream_window=16_384, initial_connection_window=65_535, max_frame_size=16_384
)


def window_updates(wire: bytes) -> list[tuple[int, int]]:
    return [
        (f.stream_id, f.window_increment)
        for f in parse_frames(wire)
        if isinstance(f, hyperframe.frame.WindowUpdateFrame)
    ]


def ack_all(pair: Pair, events: list[object]) -> None:
    for ev in events:
        if isinstance(ev, DataReceived):
            pair.server.acknowledge_received_data(ev.stream_id, ev.flow_controlled_length)


def test_blocked_sender_resumes_after_window_update() -> None:
    """send_data accepts only the stream window; after the reader consumes, the writer resumes."""
    pair = Pair(server_settings=SMALL)
    pair.handshake()
    sid = pair.open_tunnel()
    payload = b"z" * 50_000
    assert pair.client.local_send_window(sid) == 16_384
    assert pair.client.send_data(sid, payload) == 16_384
    assert pair.client.send_data(sid, payload[16_384:]) == 0
    events = pair.xfer(pair.client)
    ack_all(pair, events)
    assert window_updates(pending(pair.server)) == [(1, 16_384)]  # connection not yet at half
    pair.server.acknowledge_received_data(sid, 0)


def test_window_update_wakes_the_sender() -> None:
    """The WINDOW_UPDATE reaches the client as WindowUpdated(stream) and re-opens its window."""
    pair = Pair(server_settings=SMALL)
    pair.handshake()
    sid = pair.open_tunnel()
    sent = pair.client.send_data(sid, b"a" * 40_000)
    ack_all(pair, pair.xfer(pair.client))
    assert pair.xfer(pair.server) == [WindowUpdated(sid)]
    assert pair.client.local_send_window(sid) == 16_384
    assert pair.client.send_data(sid, b"a" * (40_000 - sent)) == 16_384


def test_window_updates_are_batched_at_half_window() -> None:
    """Acknowledging 1 KiB at a time emits one stream WINDOW_UPDATE per half window, and the
    connection one only when half the connection window is consumed."""
    pair = Pair()
    pair.handshake()
    sid = pair.open_tunnel()
    updates = []
    for _ in range(12):  # 12 MiB through a 4 MiB stream window and 16 MiB connection window
        n = pair.client.send_data(sid, b"q" * (1 << 20))
        assert n == 1 << 20
        for ev in pair.xfer(pair.client):
            assert isinstance(ev, DataReceived)
            for off in range(0, ev.flow_controlled_length, 1024):
                pair.server.acknowledge_received_data(sid, min(1024, len(ev.data) - off))
        wire = pending(pair.server)
        updates += window_updates(wire)
        pair.client.receive_data(wire)
    assert updates == [(1, 2 << 20)] * 4 + [(0, 8 << 20)] + [(1, 2 << 20)] * 2


def test_connection_window_larger_than_stream_window_avoids_starvation() -> None:
    """A stalled reader on one stream does not block another: the connection window has room."""
    pair = Pair()
    pair.handshake()
    stalled, other = pair.open_tunnel(), pair.open_tunnel()
    assert pair.client.send_data(stalled, b"s" * (8 << 20)) == 4 << 20
    pair.xfer(pair.client)  # never acknowledged
    assert pair.client.local_send_window(other) == 4 << 20
    assert pair.client.send_data(other, b"o" * 100) == 100


def test_initial_window_change_mid_stream() -> None:
    """A SETTINGS_INITIAL_WINDOW_SIZE change shifts open streams' send windows by the delta,
    possibly below zero, and new streams start at the new value."""
    pair = Pair()
    pair.handshake()
    sid = pair.open_tunnel()
    pair.client.send_data(sid, b"x" * 1000)
    assert pair.client.local_send_window(sid) == (4 << 20) - 1000
    events = pair.client.receive_data(raw_frame(4, 0, 0, b"\x00\x04" + (500).to_bytes(4, "big")))
    assert WindowUpdated(0) in events
    assert pair.client.local_send_window(sid) == 0  # 500 - 1000 < 0
    assert pair.client._streams[sid].send_window == -500
    assert pair.client.send_data(sid, b"more") == 0
    events = pair.client.receive_data(raw_frame(8, 0, sid, (600).to_bytes(4, "big")))
    assert events == [WindowUpdated(sid)]
    assert pair.client.local_send_window(sid) == 100
    pair.client.receive_data(raw_frame(4, 0, 0, b"\x00\x04" + (70_000).to_bytes(4, "big")))
    assert pair.client.local_send_window(sid) == 100 + 69_500


def test_our_smaller_initial_window_applies_when_acknowledged() -> None:
    """Until the peer ACKs our SETTINGS it may use 65535 per stream; afterwards our value holds."""
    pair = Pair(server_settings=HboneSettings(initial_stream_window=1000))
    pair.client.initiate()
    pair.server.initiate()
    pair.xfer(pair.server)  # client learns the 1000 window, but the server has no ACK yet
    assert pair.server._recv_initial_window == 65_535
    pair.drain()
    assert pair.server._recv_initial_window == 1000
    sid = pair.open_tunnel()
    assert pair.client.send_data(sid, b"y" * 5000) == 1000


def test_data_over_stream_window_resets_only_that_stream() -> None:
    """A peer sending past the stream window gets RST_STREAM(FLOW_CONTROL_ERROR); the
    connection and other streams carry on."""
    pair = Pair(server_settings=SMALL)
    pair.handshake()
    bad, good = pair.open_tunnel(), pair.open_tunnel()
    pair.client._streams[bad].send_window = 1 << 20  # make the client cheat
    pair.client._conn_send_window = 1 << 20
    pair.client.send_data(bad, b"b" * 20_000)
    pair.client.send_data(good, b"g" * 10)
    events = pair.xfer(pair.client)
    assert [e for e in events if isinstance(e, StreamReset)] == [
        StreamReset(
            bad,
            ErrorCode.FLOW_CONTROL_ERROR,
            remote=False,
            reason="DATA overflows the stream window",
        )
    ]
    # The first 16 KiB frame fitted the window and was delivered; the second overflowed it.
    assert [bytes(e.data) for e in events if isinstance(e, DataReceived)] == [
        b"b" * 16_384,
        b"g" * 10,
    ]


def test_data_over_connection_window_is_a_connection_error() -> None:
    """Past the connection window: FlowControlError and GOAWAY(FLOW_CONTROL_ERROR)."""
    pair = Pair(server_settings=SMALL)
    pair.handshake()
    a, b = pair.open_tunnel(), pair.open_tunnel()
    for sid in (a, b, pair.open_tunnel(), pair.open_tunnel(), pair.open_tunnel()):
        pair.client._streams[sid].send_window = 1 << 20
        pair.client._conn_send_window = 1 << 20
        pair.client.send_data(sid, b"c" * 16_000)
    with pytest.raises(FlowControlError):
        pair.xfer(pair.client)
    goaway = parse_frames(pending(pair.server))[-1]
    assert isinstance(goaway, hyperframe.frame.GoAwayFrame)
    assert goaway.error_code == ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.parametrize(
    ("wire", "connection_error"),
    [
        pytest.param(raw_frame(8, 0, 0, (2**31 - 1).to_bytes(4, "big")), True, id="connection"),
        pytest.param(raw_frame(8, 0, 1, (2**31 - 1).to_bytes(4, "big")), False, id="stream"),
        pytest.param(
            raw_frame(4, 0, 0, b"\x00\x04" + (2**31).to_bytes(4, "big")),
            True,
            id="SETTINGS initial window above 2^31-1",
        ),
        pytest.param(
            raw_frame(4, 0, 0, b"\x00\x04" + (2**31 - 1).to_bytes(4, "big")),
            True,
            id="SETTINGS pushes a stream window over 2^31-1",
        ),
    ],
)
def test_window_overflow(wire: bytes, connection_error: bool) -> None:
    """Overflowing a send window is FLOW_CONTROL_ERROR: GOAWAY for the connection window,
    RST_STREAM for a stream window."""
    pair = Pair()
    pair.handshake()
    sid = pair.open_tunnel()
    pair.client._streams[sid].send_window += 10  # so the SETTINGS case overflows
    if connection_error:
        with pytest.raises(FlowControlError):
            pair.client.receive_data(wire)
        assert isinstance(parse_frames(pending(pair.client))[-1], hyperframe.frame.GoAwayFrame)
    else:
        assert pair.client.receive_data(wire) == [
            StreamReset(
                sid,
                ErrorCode.FLOW_CONTROL_ERROR,
                remote=False,
                reason="WINDOW_UPDATE overflows the stream send window",
            )
        ]


def test_reset_stream_credits_unacknowledged_data() -> None:
    """Bytes delivered but never acknowledged on a reset stream return to the connection window."""
    pair = Pair()
    pair.handshake()
    sids = [pair.open_tunnel() for _ in range(3)]
    for sid in sids:
        assert pair.client.send_data(sid, b"r" * (3 << 20)) == 3 << 20
    pair.xfer(pair.client)
    assert pair.server.bytes_to_send() == 0
    for sid in sids:
        pair.server.reset_stream(sid)
    wire = pending(pair.server)
    assert window_updates(wire) == [(0, 9 << 20)]
    pair.server.acknowledge_received_data(sids[0], 100)  # late ack after reset: ignored
    assert pair.server.bytes_to_send() == 0


def test_acks_after_normal_close_still_credit_the_connection() -> None:
    """Data read after both sides ended the stream is still credited to the connection window."""
    mib = HboneSettings(initial_stream_window=1 << 20, initial_connection_window=1 << 20)
    pair = Pair(server_settings=mib)
    pair.handshake()
    sid = pair.open_tunnel()
    pair.server.end_stream(sid)
    pair.xfer(pair.server)
    assert pair.client.send_data(sid, b"d" * (1 << 20), end_stream=True) == 1 << 20
    events = pair.xfer(pair.client)
    assert pair.server.open_streams() == 0  # closed both ways, bytes not yet consumed
    ack_all(pair, events)
    assert window_updates(pending(pair.server)) == [(0, 1 << 20)]
    pair.server.acknowledge_received_data(sid, 1)  # nothing left to acknowledge: ignored
    assert pair.server.bytes_to_send() == 0


def test_frames_respect_peer_max_frame_size() -> None:
    """DATA is split at the peer's SETTINGS_MAX_FRAME_SIZE (16 KiB here), header blocks too."""
    pair = Pair(server_settings=SMALL)
    pair.handshake()
    sid = pair.open_tunnel()
    pair.client.send_data(sid, b"m" * 40_000)
    sizes = [len(f.data) for f in parse_frames(pending(pair.client))]
    assert sizes == [16_384]  # the stream window (16 KiB) limits this write to one frame
    pair.client.open_connect("10.0.0.5:1", [("baggage", "v" * 20_000)])
    frames_ = parse_frames(pending(pair.client))
    assert [type(f).__name__ for f in frames_] == ["HeadersFrame", "ContinuationFrame"]
    assert all(len(f.data) <= 16_384 for f in frames_)
