"""Streaming through the waypoint with real h11/h2 clients and servers over HBONE: server-sent
events, gRPC server and bidirectional streaming, large uploads, timeouts and retries around
streamed bodies."""

from __future__ import annotations

import hashlib

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import trio

from meshcore.protos.ambient.waypoint import v1 as pb
from tests.waypoint.clients import H2Session, h1_exchange
from tests.waypoint.harness import Pod, backend, host, millis, route, rule, waypoint_env
from waypoint.http import Limits

pytestmark = pytest.mark.trio


def streaming_pods() -> list[Pod]:
    return [Pod("reviews-v2-1", "reviews-v2", "127.0.0.13", kind="sse"),
            Pod("grpc-1", "grpc", "127.0.0.14", kind="h2stream")]


async def test_sse_events_arrive_before_the_stream_ends() -> None:
    """An SSE response: the client reads `data: 1` while the backend still waits (it sends
    `data: 2` only after the client saw the first event), then the stream ends cleanly."""
    async with waypoint_env(streaming_pods()) as env, env.tunnel("reviews-v2") as t:
        pod = env.pod("reviews-v2-1")
        conn = h11.Connection(h11.CLIENT)
        await t.send_all(conn.send(h11.Request(method="GET", target="/events", headers=[
            ("host", host("reviews-v2")), ("accept", "text/event-stream")]))
            + conn.send(h11.EndOfMessage()))
        chunks: list[bytes] = []
        head = None
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(bytes(await t.receive_some(65536)))
            elif isinstance(ev, h11.Response):
                head = ev
            elif isinstance(ev, h11.Data):
                chunks.append(bytes(ev.data))
                if b"".join(chunks) == b"data: 1\n\n":
                    assert not pod.proceed.is_set()
                    pod.proceed.set()  # only now does the backend send the rest
            elif isinstance(ev, h11.EndOfMessage):
                break
    assert head is not None and head.status_code == 200
    assert (b"content-type", b"text/event-stream") in list(head.headers)
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"


async def test_grpc_server_streaming_delivers_the_first_message_first() -> None:
    """A server-streaming gRPC call over HTTP/2: message 1 reaches the client before the
    backend sends message 2 (which waits for the client), then grpc-status trailers."""
    async with waypoint_env(streaming_pods()) as env, env.tunnel("grpc") as t:
        pod = env.pod("grpc-1")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                              (":authority", host("grpc")), (":path", "/s.S/Stream"),
                              ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(1, b"request", end_stream=True)
        await t.send_all(conn.data_to_send())
        body = b""
        trailers: dict[str, str] = {}
        ended = False
        while not ended:
            for ev in conn.receive_data(bytes(await t.receive_some(65536))):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    body += ev.data
                    if body == b"message-1":
                        assert not pod.proceed.is_set()
                        pod.proceed.set()
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)  # type: ignore[arg-type]
                elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True
            await t.send_all(conn.data_to_send())
    assert body == b"message-1message-2"
    assert trailers == {"grpc-status": "0"}


async def test_request_timeout_cuts_a_stream_that_does_not_end() -> None:
    """`timeouts.request` covers the whole response (Envoy's route timeout): an SSE stream
    still open when it expires is cut off (the HTTP/1.1 connection closes mid-body)."""
    async with waypoint_env(streaming_pods()) as env, env.tunnel("reviews-v2") as t:
        env.set_routes("reviews-v2", route(rule(
            backends=[backend("reviews-v2")],
            timeouts=pb.Timeouts(request=millis(300)))))
        conn = h11.Connection(h11.CLIENT)
        await t.send_all(conn.send(h11.Request(method="GET", target="/events", headers=[
            ("host", host("reviews-v2"))])) + conn.send(h11.EndOfMessage()))
        got = b""
        cut = False
        with trio.fail_after(10):
            while not cut:
                conn.receive_data(bytes(await t.receive_some(65536)))
                try:
                    while (ev := conn.next_event()) is not h11.NEED_DATA:
                        assert not isinstance(ev, h11.EndOfMessage), "the stream ended cleanly"
                        if isinstance(ev, h11.Data):
                            got += ev.data
                except h11.RemoteProtocolError:  # closed before the chunked body ended
                    cut = True
    assert got == b"data: 1\n\n"



async def test_bidirectional_stream_flows_both_ways_at_once() -> None:
    """A bidi gRPC-style stream: the client sends message 1, receives its echo, only then
    sends message 2 and the end (it would wait forever if either direction were buffered)."""
    pods = [Pod("grpc-1", "grpc", "127.0.0.14", kind="h2echo")]
    async with waypoint_env(pods) as env, env.tunnel("grpc") as t:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                              (":authority", host("grpc")), (":path", "/s.S/Chat"),
                              ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(1, b"ping-1")
        await t.send_all(conn.data_to_send())
        got = b""
        trailers: dict[str, str] = {}
        ended = False
        with trio.fail_after(10):
            while not ended:
                for ev in conn.receive_data(bytes(await t.receive_some(65536))):
                    if isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                        got += ev.data
                        if got == b"ping-1":
                            conn.send_data(1, b"ping-2", end_stream=True)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        trailers = dict(ev.headers)  # type: ignore[arg-type]
                    elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                        ended = True
                await t.send_all(conn.data_to_send())
    assert got == b"ping-1ping-2"
    assert trailers == {"grpc-status": "0"}


BIG = bytes(range(256)) * (20 * 4096)  # 20 MiB


async def test_large_http1_upload_arrives_byte_exact() -> None:
    """A 20 MiB HTTP/1.1 upload (far above the old 4 MiB buffer) streams to the pod intact."""
    async with waypoint_env() as env, env.tunnel("reviews-v2") as t:
        ((status, _, digest),) = await h1_exchange(
            t, [("POST", "/sha256", host("reviews-v2"), (), BIG)])
    assert status == 200
    assert digest.decode() == hashlib.sha256(BIG).hexdigest()
    assert env.pod("reviews-v2-1").connections == 1


async def test_large_http2_upload_to_an_http1_pod_arrives_byte_exact() -> None:
    """20 MiB over HTTP/2 (flow-controlled on both sides) to an HTTP/1.1 pod, intact."""
    async with waypoint_env() as env, env.tunnel("reviews-v2") as t:
        (res,) = await H2Session(t).exchange([([
            (":method", "POST"), (":scheme", "http"), (":authority", host("reviews-v2")),
            (":path", "/sha256")], BIG)])
    assert res.status == 200
    assert res.body.decode() == hashlib.sha256(BIG).hexdigest()


async def test_retry_replays_a_streamed_body_within_the_buffer() -> None:
    """A 100 KiB streamed body (above the inline size) to a pod answering 503 once: the retry
    replays it, the pod's second attempt gets it whole."""
    body = b"r" * 100_000
    async with waypoint_env() as env:
        env.pod("reviews-v2-1").fail_first = 1
        status, _, _ = await env.get("reviews-v2", "/up", method="POST", body=body)
    hits = env.pod("reviews-v2-1").hits
    assert status == 200
    assert [h["body"] for h in hits] == [body, body]
    assert [h["headers"]["x-envoy-attempt-count"] for h in hits] == ["1", "2"]  # type: ignore[index]


async def test_no_retry_once_more_than_the_buffer_was_streamed() -> None:
    """A 2 MiB streamed body (over the 1 MiB retry buffer) answered 503: not retried (Envoy
    cannot replay it either), the 503 goes to the client."""
    body = b"s" * (2 * 1024 * 1024)
    async with waypoint_env() as env:
        env.pod("reviews-v2-1").fail_first = 1
        status, _, _ = await env.get("reviews-v2", "/up", method="POST", body=body)
    assert status == 503
    assert len(env.pod("reviews-v2-1").hits) == 1


async def test_mirror_copies_a_streamed_body_that_fits_the_buffer() -> None:
    """A 100 KiB streamed upload is mirrored whole once it ended; the client gets the
    primary's answer."""
    body = b"m" * 100_000
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(backends=[backend("reviews")], filters=[
            pb.Filter(request_mirror=pb.Mirror(backend=backend("reviews-v2"), numerator=100,
                                               denominator=100))])))
        status, _, _ = await env.get("reviews", "/m", method="POST", body=body)
        with trio.fail_after(5):
            await env.pod("reviews-v2-1").hit.wait()
    assert status == 200
    assert env.pod("reviews-v2-1").hits[0]["body"] == body


async def test_streamed_body_over_the_limit_gets_413() -> None:
    """A chunked upload (no declared length) passing a 1 MiB limit: 413, since no response
    had started; the pod never sees a complete request."""
    async with waypoint_env(limits=Limits(max_request_body=1024 * 1024)) as env, \
            env.tunnel("reviews-v2") as t:
        conn = h11.Connection(h11.CLIENT)
        await t.send_all(conn.send(h11.Request(method="POST", target="/big", headers=[
            ("host", host("reviews-v2")), ("transfer-encoding", "chunked")])))
        status = 0
        with trio.fail_after(10):
            for _ in range(40):  # 40 * 64 KiB = 2.5 MiB, unless the answer comes first
                try:
                    await t.send_all(conn.send(h11.Data(data=b"z" * 65536)))
                except trio.BrokenResourceError:
                    break
            while not status:
                conn.receive_data(bytes(await t.receive_some(65536)))
                ev = conn.next_event()
                if isinstance(ev, h11.Response):
                    status = ev.status_code
    assert status == 413
    assert not [h for h in env.pod("reviews-v2-1").hits if h.get("path") == "/big"]
