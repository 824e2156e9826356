"""Interop in memory with python-hyper/h2 as an independent HTTP/2 peer, in both roles."""

from __future__ import annotations

import h2.connection
import h2.events
import h2.settings

from meshcore.hbone import (
    DataReceived,
    ErrorCode,
    Event,
    HboneConnection,
    HboneSettings,
    RequestReceived,
    ResponseReceived,
    Role,
    StreamEnded,
    StreamReset,
)
from tests.meshcore.hbone.helpers import h2_peer, pending

IWS = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE


class Link:
    """Our core and an h2 connection joined in memory."""

    def __init__(self, ours: HboneConnection, theirs: h2.connection.H2Connection) -> None:
        self.ours = ours
        self.theirs = theirs
        self.our_events: list[Event] = []
        self.their_events: list[h2.events.Event] = []

    def settle(self) -> None:
        """Shuttle bytes until both sides are quiet, acknowledging all received data."""
        while True:
            moved = False
            out = pending(self.ours)
            if out:
                moved = True
                for ev in self.theirs.receive_data(out):
                    self.their_events.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        self.theirs.acknowledge_received_data(
                            ev.flow_controlled_length, ev.stream_id
                        )
            out = self.theirs.data_to_send()
            if out:
                moved = True
                for ev in self.ours.receive_data(out):
                    if isinstance(ev, DataReceived):
                        ev = DataReceived(
                            ev.stream_id, memoryview(bytes(ev.data)), ev.flow_controlled_length
                        )
                        self.ours.acknowledge_received_data(ev.stream_id, ev.flow_controlled_length)
                    self.our_events.append(ev)
            if not moved:
                return

    def our_data(self, sid: int) -> bytes:
        return b"".join(
            bytes(e.data)
            for e in self.our_events
            if isinstance(e, DataReceived) and e.stream_id == sid
        )

    def their_data(self, sid: int) -> bytes:
        return b"".join(
            e.data
            for e in self.their_events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )

    def pump_ours(self, sid: int, payload: bytes, end_stream: bool = False) -> None:
        """Send all of payload from our side, waiting for windows as an adapter would."""
        view = memoryview(payload)
        while True:
            n = self.ours.send_data(sid, view, end_stream=end_stream)
            view = view[n:]
            self.settle()
            if not view:
                return
            assert n or self.ours.local_send_window(sid), "stuck: no window and no progress"

    def pump_theirs(self, sid: int, payload: bytes, end_stream: bool = False) -> None:
        """Send all of payload from h2, respecting its flow-control view."""
        pos = 0
        while pos < len(payload):
            n = min(
                self.theirs.local_flow_control_window(sid),
                len(payload) - pos,
                self.theirs.max_outbound_frame_size,
            )
            assert n > 0, "stuck: h2 has no window"
            self.theirs.send_data(sid, payload[pos : pos + n])
            pos += n
            self.settle()
        if end_stream:
            self.theirs.end_stream(sid)
            self.settle()


def test_our_client_h2_server() -> None:
    """Our client opens CONNECT through an h2 server; data, half-close both ways, and reset."""
    link = Link(HboneConnection(Role.CLIENT), h2_peer(client_side=False))
    link.ours.initiate()
    link.settle()
    sid = link.ours.open_connect("10.0.0.2:8080", [("baggage", "k8s.namespace.name=shop")])
    link.settle()
    request = link.their_events[-1]
    assert isinstance(request, h2.events.RequestReceived)
    assert request.headers == [
        (":method", "CONNECT"),
        (":authority", "10.0.0.2:8080"),
        ("baggage", "k8s.namespace.name=shop"),
    ]
    link.theirs.send_headers(sid, [(":status", "200")])
    link.settle()
    assert ResponseReceived(sid, 200, ()) in link.our_events
    upload = bytes(range(256)) * 5000
    link.pump_ours(sid, upload, end_stream=True)
    assert link.their_data(sid) == upload
    assert any(isinstance(e, h2.events.StreamEnded) for e in link.their_events)
    download = b"d" * 300_000
    link.pump_theirs(sid, download, end_stream=True)
    assert link.our_data(sid) == download
    assert link.our_events[-1] == StreamEnded(sid)
    assert link.ours.open_streams() == 0
    other = link.ours.open_connect("10.0.0.3:80")
    link.settle()
    link.theirs.reset_stream(other, ErrorCode.REFUSED_STREAM)
    link.settle()
    assert link.our_events[-1] == StreamReset(other, ErrorCode.REFUSED_STREAM, remote=True)


def test_h2_client_our_server() -> None:
    """An h2 client's CONNECT reaches our server as RequestReceived; data and half-close work."""
    link = Link(HboneConnection(Role.SERVER), h2_peer(client_side=True))
    link.ours.initiate()
    link.settle()
    sid = link.theirs.get_next_available_stream_id()
    link.theirs.send_headers(
        sid,
        [
            (":method", "CONNECT"),
            (":authority", "[fd00::1]:8080"),
            ("forwarded", 'for="10.1.1.1:4000"'),
        ],
    )
    link.settle()
    assert (
        RequestReceived(sid, "CONNECT", "[fd00::1]:8080", (("forwarded", 'for="10.1.1.1:4000"'),))
        in link.our_events
    )
    link.ours.respond(sid, 200, [("baggage", "k8s.namespace.name=db")])
    link.settle()
    response = next(e for e in link.their_events if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(":status", "200"), ("baggage", "k8s.namespace.name=db")]
    link.pump_theirs(sid, b"u" * 200_000, end_stream=True)
    assert link.our_data(sid) == b"u" * 200_000
    assert link.our_events[-1] == StreamEnded(sid)
    link.pump_ours(sid, b"v" * 5_000_000, end_stream=True)
    assert link.their_data(sid) == b"v" * 5_000_000
    assert link.ours.open_streams() == 0
    second = link.theirs.get_next_available_stream_id()
    link.theirs.send_headers(second, [(":method", "CONNECT"), (":authority", "10.0.0.4:1")])
    link.settle()
    link.ours.reset_stream(second, ErrorCode.CONNECT_ERROR)
    link.settle()
    reset = link.their_events[-1]
    assert isinstance(reset, h2.events.StreamReset) and reset.error_code == ErrorCode.CONNECT_ERROR


def test_small_windows_both_ways_with_h2_server() -> None:
    """With tiny windows on both sides, 1 MB crosses each way through many WINDOW_UPDATEs."""
    theirs = h2_peer(client_side=False)
    theirs.update_settings({IWS: 1000})
    link = Link(HboneConnection(Role.CLIENT, HboneSettings(initial_stream_window=700)), theirs)
    link.ours.initiate()
    link.settle()
    sid = link.ours.open_connect("10.0.0.2:80")
    link.settle()
    link.theirs.send_headers(sid, [(":status", "200")])
    link.settle()
    assert link.ours.local_send_window(sid) == 1000
    payload = bytes(range(256)) * 4000
    link.pump_ours(sid, payload)
    assert link.their_data(sid) == payload
    link.pump_theirs(sid, payload)
    assert link.our_data(sid) == payload


def test_small_windows_with_h2_client() -> None:
    """Our server with a 1 KiB stream window paces an h2 client; the h2 client's small window
    paces us."""
    theirs = h2_peer(client_side=True)
    theirs.update_settings({IWS: 1500})
    link = Link(HboneConnection(Role.SERVER, HboneSettings(initial_stream_window=1024)), theirs)
    link.ours.initiate()
    link.settle()
    sid = link.theirs.get_next_available_stream_id()
    link.theirs.send_headers(sid, [(":method", "CONNECT"), (":authority", "10.0.0.4:1")])
    link.settle()
    link.ours.respond(sid, 200)
    link.settle()
    assert link.theirs.local_flow_control_window(sid) == 1024
    link.pump_theirs(sid, b"x" * 100_000, end_stream=True)
    assert link.our_data(sid) == b"x" * 100_000
    link.pump_ours(sid, b"y" * 100_000, end_stream=True)
    assert link.their_data(sid) == b"y" * 100_000
    assert link.ours.open_streams() == 0
