"""The sans-IO HTTP codecs (waypoint.http): bytes in, requests/responses and bytes out."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h11
import pytest

from waypoint.errors import HttpProtocolError
from waypoint.http import (
    H2_PREFACE,
    BodyChunk,
    BodyEnd,
    H1Client,
    H1Server,
    H2Client,
    H2Server,
    HttpRequest,
    HttpResponse,
    Limits,
    RequestFailed,
    StreamCancelled,
    sniff,
)

REQ = (b"POST /api/items?x=1 HTTP/1.1\r\nHost: reviews:9080\r\nConnection: keep-alive\r\n"
       b"X-Trace: 1\r\nContent-Length: 5\r\n\r\nhello")


@pytest.mark.parametrize(("data", "kind"), [
    pytest.param(H2_PREFACE + b"\x00", "h2", id="h2-preface"),
    pytest.param(H2_PREFACE[:10], None, id="h2-prefix-needs-more"),
    pytest.param(b"GET / HTTP/1.1\r\n", "http1", id="http1-get"),
    pytest.param(b"DELE", None, id="method-prefix-needs-more"),
    pytest.param(b"\x16\x03\x01\x02\x00", "tcp", id="tls-client-hello"),
    pytest.param(b"get / HTTP/1.1", "tcp", id="lowercase-is-not-http"),
    pytest.param(b"", None, id="nothing-yet"),
])
def test_sniff(data: bytes, kind: str | None) -> None:
    """The first bytes tell HTTP/2, HTTP/1.x and other TCP apart (or ask for more)."""
    assert sniff(data) == kind


def test_h1_server_parses_a_whole_request() -> None:
    """A request whose body arrives with its head comes out whole, hop-by-hop headers
    dropped, names lower-cased."""
    assert H1Server().receive_data(REQ) == [HttpRequest(
        "POST", "/api/items?x=1", "reviews:9080", (("x-trace", "1"),), b"hello")]


def test_h1_server_streams_a_body_that_comes_later() -> None:
    """Fed byte by byte: a streamed head (declared length kept), the body as chunks, then
    the end."""
    server = H1Server()
    out: list[object] = []
    for i in range(len(REQ)):
        out += server.receive_data(REQ[i:i + 1])
    assert out[0] == HttpRequest("POST", "/api/items?x=1", "reviews:9080", (("x-trace", "1"),),
                                 streamed=True, length=5)
    assert b"".join(e.data for e in out[1:-1]) == b"hello"  # type: ignore[attr-defined]
    assert out[-1] == BodyEnd()


def test_h1_server_keep_alive_and_pipelined_request() -> None:
    """A pipelined second request is held until the first response is sent, then parsed."""
    server = H1Server()
    first = server.receive_data(REQ + b"GET /two HTTP/1.1\r\nHost: r\r\n\r\n")
    assert [r.path for r in first] == ["/api/items?x=1"]  # type: ignore[union-attr]
    wire = server.send_response(HttpResponse(200, (("x-a", "1"),), b"ok"))
    assert wire.startswith(b"HTTP/1.1 200 ") and wire.endswith(b"\r\n\r\nok")
    assert b"content-length: 2\r\n" in wire.lower()
    second = server.receive_data(None)
    assert [r.path for r in second] == ["/two"]  # type: ignore[union-attr]


@pytest.mark.parametrize(("data", "status"), [
    pytest.param(b"GET / HTTP/1.1\r\nbad line\r\n\r\n", 400, id="malformed-header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n", 431,
                 id="headers-too-large"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413,
                 id="declared-body-too-large"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3e9\r\n" + b"a" * 1001 + b"\r\n0\r\n\r\n", 413, id="chunked-body-too-large"),
])
def test_h1_server_refuses_bad_requests(data: bytes, status: int) -> None:
    """Malformed or oversize requests give one RequestFailed with the status to answer; the
    error response closes the connection."""
    server = H1Server(Limits(max_header_bytes=1024, max_request_body=1000))
    out = server.receive_data(data)
    assert len(out) == 1 and isinstance(out[0], RequestFailed)
    assert out[0].status == status
    wire = server.send_error(status, out[0].reason)
    assert wire.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"connection: close" in wire.lower()
    assert not server.keep_alive


def test_h1_client_round_trip_with_h11_server() -> None:
    """H1Client's bytes are a valid request for an independent h11 server; its response,
    fed back (byte by byte), comes out whole."""
    client = H1Client()
    peer = h11.Connection(h11.SERVER)
    peer.receive_data(client.start(HttpRequest("PUT", "/x", "svc:80", (("x-a", "1"),), b"body")))
    head = peer.next_event()
    assert isinstance(head, h11.Request) and head.method == b"PUT"
    assert (b"host", b"svc:80") in list(head.headers)
    assert peer.next_event() == h11.Data(data=b"body")
    wire = peer.send(h11.Response(status_code=201, headers=[("content-length", "2"),
                                                            ("x-b", "2")]))
    wire += peer.send(h11.Data(data=b"ok")) + peer.send(h11.EndOfMessage())
    events = []
    for i in range(len(wire)):
        events += client.receive_data(wire[i:i + 1])
    assert events == [HttpResponse(201, (("x-b", "2"),), length=2), BodyChunk(b"o"),
                      BodyChunk(b"k"), BodyEnd()]
    assert client.reusable


def test_h1_client_eof_before_end_is_an_error() -> None:
    """A backend closing mid-response raises HttpProtocolError (502)."""
    client = H1Client()
    client.start(HttpRequest("GET", "/", "svc"))
    client.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(HttpProtocolError) as info:
        client.receive_data(b"")
    assert info.value.status == 502


def _h2_client() -> h2.connection.H2Connection:
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding="utf-8"))
    c.initiate_connection()
    return c


@pytest.mark.parametrize("chunk", [pytest.param(100_000, id="whole"),
                                   pytest.param(1, id="byte-by-byte")])
def test_h2_server_request_with_trailers_and_response(chunk: int) -> None:
    """A gRPC-style stream (headers, data, trailers) becomes one request when it arrives at
    once, else a streamed head, its chunks and an end with the trailers; the response with
    trailers reaches an independent h2 client."""
    client, server = _h2_client(), H2Server()
    client.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "g:80"),
                            (":path", "/svc/M"), ("content-type", "application/grpc"),
                            ("te", "trailers")])
    client.send_data(1, b"\x00msg")
    client.send_headers(1, [("x-t", "1")], end_stream=True)
    server.initiate()
    wire = client.data_to_send()
    out = []
    for i in range(0, len(wire), chunk):
        out += server.receive_data(wire[i:i + chunk])
    headers = (("content-type", "application/grpc"), ("te", "trailers"))
    if chunk > 1:
        assert out == [HttpRequest("POST", "/svc/M", "g:80", headers, b"\x00msg",
                                   (("x-t", "1"),), "http", "HTTP/2", 1)]
    else:
        assert out[0] == HttpRequest("POST", "/svc/M", "g:80", headers, protocol="HTTP/2",
                                     streamed=True)
        assert b"".join(e.data for e in out[1:-1]) == b"\x00msg"  # type: ignore[attr-defined]
        assert out[-1] == BodyEnd((("x-t", "1"),))
    server.send_response(1, HttpResponse(200, (("content-type", "application/grpc"),),
                                         b"\x00ok", (("grpc-status", "0"),)))
    events = client.receive_data(server.data_to_send())
    kinds = [type(e).__name__ for e in events if not isinstance(
        e, h2.events.RemoteSettingsChanged | h2.events.SettingsAcknowledged)]
    assert kinds == ["ResponseReceived", "DataReceived", "TrailersReceived", "StreamEnded"]


def test_h2_server_large_response_respects_flow_control() -> None:
    """A 200 KB body goes out only as the client opens windows, byte-exact in the end."""
    client, server = _h2_client(), H2Server()
    server.initiate()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                            (":path", "/")], end_stream=True)
    server.receive_data(client.data_to_send())
    body = bytes(range(256)) * 800
    server.send_response(1, HttpResponse(200, (), body))
    got = b""
    ended = False
    for _ in range(50):
        for ev in client.receive_data(server.data_to_send()):
            if isinstance(ev, h2.events.DataReceived):
                got += ev.data
                client.acknowledge_received_data(ev.flow_controlled_length, 1)
            ended = ended or isinstance(ev, h2.events.StreamEnded)
        server.receive_data(client.data_to_send())
        if ended:
            break
    assert ended and got == body


def test_h2_server_protocol_error_is_goaway_and_reset_is_cancel() -> None:
    """A client reset gives StreamCancelled; a frame on stream 0 gives a connection-level
    RequestFailed and GOAWAY."""
    client, server = _h2_client(), H2Server()
    server.initiate()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                            (":path", "/")])
    client.reset_stream(1)
    out = server.receive_data(client.data_to_send())
    assert out == [StreamCancelled(1)]
    out = server.receive_data(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    assert len(out) == 1 and isinstance(out[0], RequestFailed) and out[0].stream_id is None
    assert server.closed
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


def test_h2_client_against_independent_h2_server() -> None:
    """H2Client's request is read by an h2 server; the response with trailers comes back."""
    client = H2Client()
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding="utf-8"))
    peer.initiate_connection()
    preface = client.initiate()
    sid = client.send_request(HttpRequest("POST", "/m", "g:80", (("te", "trailers"),), b"abc",
                                          protocol="HTTP/2"))
    events = peer.receive_data(preface + client.data_to_send())
    req = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert (":path", "/m") in req.headers
    assert any(isinstance(e, h2.events.DataReceived) and e.data == b"abc" for e in events)
    peer.send_headers(req.stream_id, [(":status", "200")])
    peer.send_data(req.stream_id, b"ok")
    peer.send_headers(req.stream_id, [("grpc-status", "0")], end_stream=True)
    events = client.receive_data(peer.data_to_send())
    assert events == [(sid, HttpResponse(200, ())), (sid, BodyChunk(b"ok")),
                      (sid, BodyEnd((("grpc-status", "0"),)))]


def test_h2_server_oversize_headers_fail_that_stream_only() -> None:
    """Headers over the limit give a 431 for that stream; the connection stays usable."""
    client, server = _h2_client(), H2Server(Limits(max_header_bytes=1024))
    server.initiate()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                            (":path", "/"), ("x-big", "a" * 2000)], end_stream=True)
    client.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                            (":path", "/ok")], end_stream=True)
    out = server.receive_data(client.data_to_send())
    assert isinstance(out[0], RequestFailed) and (out[0].status, out[0].stream_id) == (431, 1)
    assert isinstance(out[1], HttpRequest) and out[1].path == "/ok"
    assert not server.closed
