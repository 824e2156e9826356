"""Arbitrary frame sequences never crash the core: only events or a RemoteProtocolError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcore.hbone import DataReceived, RemoteProtocolError
from tests.meshcore.hbone.helpers import Pair, literal_block, raw_frame

CONNECT = literal_block([(":method", "CONNECT"), (":authority", "10.0.0.3:80")])

frame = st.builds(
    raw_frame,
    st.integers(0, 10),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]),
    st.one_of(st.binary(max_size=40), st.just(CONNECT), st.just(b"\x00\x00\x00\x01")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frame, max_size=12), st.integers(1, 64), st.booleans())
def test_random_frames_give_events_or_remote_error(
    frames_: list[bytes], piece: int, as_client: bool
) -> None:
    """Random frames, fed in random-sized pieces to either role, either decode to events or raise
    RemoteProtocolError with a GOAWAY queued; acknowledging delivered data never fails."""
    pair = Pair()
    pair.handshake()
    pair.open_tunnel()
    conn = pair.client if as_client else pair.server
    conn.data_to_send()
    wire = b"".join(frames_)
    try:
        for i in range(0, len(wire), piece):
            for ev in conn.receive_data(wire[i : i + piece]):
                if isinstance(ev, DataReceived):
                    conn.acknowledge_received_data(ev.stream_id, ev.flow_controlled_length)
    except RemoteProtocolError:
        assert conn.bytes_to_send() > 0
        assert conn.statistics().goaway_sent
