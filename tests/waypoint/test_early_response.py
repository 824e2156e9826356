"""Upstream exchanges read the response while the request body is still being sent: an
HTTP/1.1 backend answering before the upload ended (413, an early 503) is heard at once, one
that echoes the upload as it reads it does not stall, a connection whose request was cut off
is never reused, retries follow the retry buffer; HTTP/2 clients and backends get the same
early answers (streams reset, slots and windows given back). Real h11/h2 clients and
backends over HBONE through the waypoint."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h11
import pytest
import trio

from tests.waypoint.clients import H2Session, h1_exchange
from tests.waypoint.harness import Pod, app_response, default_pods, host, waypoint_env

pytestmark = pytest.mark.trio

App = Callable[[Pod, trio.SocketStream], Awaitable[None]]
BIG = bytes(range(256)) * (20 * 4096)  # 20 MiB
CHUNK = 64 * 1024


def early_app(status: int, after: int = 0, eof: trio.Event | None = None) -> App:
    """An HTTP/1.1 app whose first request gets `status` once `after` body bytes
    arrived, then it stops reading that connection until `pod.proceed`, then reads it to its
    end (recording `{"eof": bytes read}`, setting `eof`). Other requests: the harness's
    normal answers."""
    left = 1

    async def serve(pod: Pod, stream: trio.SocketStream) -> None:
        nonlocal left
        conn = h11.Connection(h11.SERVER)
        pod.connections += 1
        number = pod.connections
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            while True:
                head, body, early = None, bytearray(), False
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data and conn.their_state is h11.IDLE:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(ev, h11.Request):
                        head = ev
                        early = left > 0
                        left -= early
                    elif isinstance(ev, h11.Data):
                        body += ev.data
                    elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                        break
                    if early and len(body) >= after:
                        break
                assert head is not None
                if early:
                    pod.hits.append({"early": status, "conn": number, "read": len(body)})
                    pod.hit.set()
                    answer = b"too early\n"
                    await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
                        ("content-length", str(len(answer)))])) + conn.send(h11.Data(
                            data=answer)) + conn.send(h11.EndOfMessage()))
                    await pod.proceed.wait()  # not reading: the sender's windows fill up
                    total = len(body)
                    with contextlib.suppress(OSError, trio.BrokenResourceError):
                        while data := await stream.receive_some(65536):
                            total += len(data)
                    pod.hits.append({"eof": total, "conn": number})
                    if eof is not None:
                        eof.set()
                    return
                hs = {n.decode(): v.decode() for n, v in head.headers}
                status_, rh, rb = app_response(pod, head.method.decode(), head.target.decode(),
                                               hs, bytes(body))
                pod.hits[-1]["conn"] = number
                await stream.send_all(conn.send(h11.Response(
                    status_code=status_, headers=[*rh, ("content-length", str(len(rb)))]))
                    + conn.send(h11.Data(data=rb)) + conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    return serve


async def echo_app(pod: Pod, stream: trio.SocketStream) -> None:
    """HTTP/1.1, chunked: the response head at once, then every request body chunk echoed as
    soon as it is read, the response ending with the request."""
    conn = h11.Connection(h11.SERVER)
    pod.connections += 1
    with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data and conn.their_state is h11.IDLE:
                    return
                conn.receive_data(data)
            elif isinstance(ev, h11.Request):
                pod.hits.append({"path": ev.target.decode()})
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=[
                    ("transfer-encoding", "chunked")])))
            elif isinstance(ev, h11.Data):
                await stream.send_all(conn.send(h11.Data(data=bytes(ev.data))))
            elif isinstance(ev, h11.EndOfMessage):
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:
                return


def pods_with(app: App) -> list[Pod]:
    """The default pods, reviews-v2's one running `app`."""
    return [Pod("reviews-v2-1", "reviews-v2", "127.0.0.13", app=app)
            if p.name == "reviews-v2-1" else p for p in default_pods()]


async def upload(t: trio.abc.Stream, path: str,
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
    """POST `body` (declared length) in 64 KiB writes while reading the response at the same
    time; the upload stops when the response has ended (or the tunnel breaks)."""
    conn = h11.Connection(h11.CLIENT)

    async def send() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                 h11.LocalProtocolError):
            await t.send_all(conn.send(h11.Request(method="POST", target=path, headers=[
                ("host", host("reviews-v2")), ("content-length", str(len(body)))])))
            for i in range(0, len(body), CHUNK):
                await t.send_all(conn.send(h11.Data(data=body[i:i + CHUNK])))
            await t.send_all(conn.send(h11.EndOfMessage()))

    status, headers, got = 0, {}, b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(bytes(await t.receive_some(65536)))
            elif isinstance(ev, h11.Response):
                status = ev.status_code
                headers = {n.decode(): v.decode() for n, v in ev.headers}
            elif isinstance(ev, h11.Data):
                got += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
            elif isinstance(ev, h11.ConnectionClosed):
                raise AssertionError("the tunnel closed before the response ended")
        nursery.cancel_scope.cancel()
    return status, headers, got


async def test_early_413_reaches_the_client_during_a_large_upload() -> None:
    """A backend answering 413 after the head and reading no further, while the client
    uploads 20 MiB: the client gets the 413 (with `connection: close`), the backend sees its
    connection closed (the rest is not sent), that connection is never used again, and
    requests on other tunnels meanwhile (to another Service, and to the same pod on a new
    backend connection) are answered normally."""
    closed = trio.Event()
    async with waypoint_env(pods_with(early_app(413, eof=closed))) as env:
        pod = env.pod("reviews-v2-1")
        async with env.tunnel("reviews-v2") as t:
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    result: list[tuple[int, dict[str, str], bytes]] = []

                    async def client() -> None:
                        result.append(await upload(t, "/upload", BIG))

                    nursery.start_soon(client)
                    await pod.hit.wait()  # the upload is under way at the backend
                    other = await env.get("reviews", "/other")
                    during = await env.get("reviews-v2", "/during")
        (status, headers, body), = result
        assert (status, body) == (413, b"too early\n")
        assert headers.get("connection") == "close"
        assert (other[0], during[0]) == (200, 200)
        pod.proceed.set()  # the backend reads its connection again: the waypoint closed it
        with trio.fail_after(10):
            await closed.wait()
            after = await env.get("reviews-v2", "/after")
        stats = env.proxy.downstream.handler.upstreams.pool.statistics()  # type: ignore[attr-defined]
    eof = next(h for h in pod.hits if "eof" in h)
    assert eof["conn"] == 1 and isinstance(eof["eof"], int) and eof["eof"] < len(BIG)
    assert after[0] == 200
    assert pod.connections == 2  # the upload's, then one for /during, reused by /after
    assert stats["cut_uploads"] == 1
    assert [(h["path"], h["conn"]) for h in pod.hits if "path" in h] == [("/during", 2),
                                                                          ("/after", 2)]


async def test_backend_echoing_the_upload_as_it_reads_it() -> None:
    """A chunked HTTP/1.1 echo: the client sends chunk k+1 only after it received the echo
    of chunk k (it would wait forever if the waypoint sent the whole body before reading the
    response); the response head carries `connection: close` (it left before the request
    ended, Envoy's rule) and the echo is byte-exact."""
    chunks = [bytes([k]) * (10_000 * k) for k in range(1, 6)]
    async with waypoint_env(pods_with(echo_app)) as env, env.tunnel("reviews-v2") as t:
        conn = h11.Connection(h11.CLIENT)
        await t.send_all(conn.send(h11.Request(method="POST", target="/echo", headers=[
            ("host", host("reviews-v2")), ("transfer-encoding", "chunked")])))
        head: h11.Response | None = None
        echoed = b""
        ended = False
        with trio.fail_after(10):
            for k, chunk in enumerate(chunks):
                await t.send_all(conn.send(h11.Data(data=chunk)))
                want = b"".join(chunks[:k + 1])
                while echoed != want:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        conn.receive_data(bytes(await t.receive_some(65536)))
                    elif isinstance(ev, h11.Response):
                        head = ev
                    elif isinstance(ev, h11.Data):
                        echoed += ev.data
                        assert want.startswith(echoed)
                    else:
                        raise AssertionError(f"unexpected {ev!r}")
            await t.send_all(conn.send(h11.EndOfMessage()))
            while not ended:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(bytes(await t.receive_some(65536)))
                else:
                    assert not isinstance(ev, h11.Data), "echo after the request ended"
                    ended = isinstance(ev, h11.EndOfMessage)
    assert head is not None and head.status_code == 200
    assert (b"connection", b"close") in list(head.headers)
    assert echoed == b"".join(chunks)


async def test_early_503_within_the_retry_buffer_is_retried_with_the_whole_body() -> None:
    """An early 503 (after the head, nothing read) while 300 KiB stream in: the body so far
    is in the retry buffer, so the retry replays it and continues from the client; the
    backend's second attempt gets it whole on a new connection."""
    body = bytes(range(256)) * 1200  # 300 KiB
    async with waypoint_env(pods_with(early_app(503))) as env, env.tunnel("reviews-v2") as t:
        pod = env.pod("reviews-v2-1")
        with trio.fail_after(20):
            status, _, digest = await upload(t, "/sha256", body)
        pod.proceed.set()
    assert status == 200
    assert digest.decode() == hashlib.sha256(body).hexdigest()
    early = [h for h in pod.hits if "early" in h]
    (done,) = [h for h in pod.hits if h.get("path") == "/sha256"]
    assert [h["conn"] for h in early] == [1]
    assert done["conn"] == 2
    assert done["headers"]["x-envoy-attempt-count"] == "2"  # type: ignore[index]


async def test_early_503_past_the_retry_buffer_goes_to_the_client() -> None:
    """A backend answering 503 after reading 2 MiB of a 20 MiB upload: more than the 1 MiB
    retry buffer went by, so (like Envoy) no retry: the client gets the 503 at once."""
    async with waypoint_env(pods_with(early_app(503, after=2 * 1024 * 1024))) as env, \
            env.tunnel("reviews-v2") as t:
        pod = env.pod("reviews-v2-1")
        with trio.fail_after(20):
            status, headers, _ = await upload(t, "/sha256", BIG)
        pod.proceed.set()
    assert status == 503
    assert headers.get("connection") == "close"
    assert [h["early"] for h in pod.hits if "early" in h] == [503]
    assert not [h for h in pod.hits if h.get("path") == "/sha256"]


async def test_http2_client_gets_an_early_413_from_an_http1_backend() -> None:
    """Over HTTP/2 downstream (a flow-controlled body) to the HTTP/1.1 backend: the early 413
    arrives before the 20 MiB were sent, and the same HTTP/2 connection then carries another
    request (to a new backend connection)."""
    async with waypoint_env(pods_with(early_app(413))) as env, env.tunnel("reviews-v2") as t:
        pod = env.pod("reviews-v2-1")
        session = H2Session(t)
        headers = [(":method", "POST"), (":scheme", "http"), (":authority", host("reviews-v2"))]
        with trio.fail_after(20):
            (early,) = await session.exchange([([*headers, (":path", "/upload"),
                                                 ("content-length", str(len(BIG)))], BIG)])
            (after,) = await session.exchange([([*headers, (":path", "/after")], b"x")])
        pod.proceed.set()
    assert (early.status, early.body) == (413, b"too early\n")
    assert after.status == 200
    assert [h["conn"] for h in pod.hits if h.get("path") == "/after"] == [2]


async def test_a_streamed_upload_sent_to_its_end_leaves_the_connection_reusable() -> None:
    """Two 200 KiB uploads one after another (the backend reads each whole, then answers):
    both bodies were written to their end, so the second reuses the first's backend
    connection and nothing was cut off."""
    body = b"u" * 200_000
    async with waypoint_env() as env, env.tunnel("reviews-v2") as t:
        with trio.fail_after(20):
            answers = await h1_exchange(t, [("POST", "/sha256", host("reviews-v2"), (), body),
                                            ("POST", "/sha256", host("reviews-v2"), (), body)])
        stats = env.proxy.downstream.handler.upstreams.pool.statistics()  # type: ignore[attr-defined]
    digest = hashlib.sha256(body).hexdigest().encode()
    assert [(s, b) for s, _, b in answers] == [(200, digest), (200, digest)]
    assert env.pod("reviews-v2-1").connections == 1
    assert (stats["reused"], stats["cut_uploads"]) == (1, 0)


async def early_h2_app(pod: Pod, stream: trio.SocketStream) -> None:
    """HTTP/2, one stream at a time (MAX_CONCURRENT_STREAMS 1): every request is answered
    413 as soon as its headers arrive, its body is consumed but ignored."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    conn.initiate_connection()
    pod.connections += 1
    await stream.send_all(conn.data_to_send())
    with contextlib.suppress(trio.BrokenResourceError, h2.exceptions.ProtocolError):
        while data := await stream.receive_some(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    pod.hits.append({"stream": ev.stream_id})
                    conn.send_headers(ev.stream_id, [(":status", "413"),
                                                     ("content-length", "0")], end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            await stream.send_all(conn.data_to_send())


async def test_http2_backend_answering_early_gets_the_rest_of_the_request_reset() -> None:
    """An HTTP/2 backend (one stream at a time) ends its response before the request body
    ended: the waypoint resets that stream (Envoy does), so the connection's only stream
    slot is free again and the next request goes over the same connection."""
    pods = [Pod("grpc-1", "grpc", "127.0.0.14", app=early_h2_app)]
    def headers(path: str) -> list[tuple[str, str]]:
        return [(":method", "POST"), (":scheme", "http"), (":authority", host("grpc")),
                (":path", path), ("content-type", "application/grpc")]

    async with waypoint_env(pods) as env, env.tunnel("grpc") as t:
        session = H2Session(t)
        with trio.fail_after(10):
            (first,) = await session.exchange([(headers("/s.S/A"), b"g" * 300_000)])
            (second,) = await session.exchange([(headers("/s.S/B"), b"g" * 300_000)])
    assert (first.status, second.status) == (413, 413), (first, second)
    pod = env.pod("grpc-1")
    assert [h["stream"] for h in pod.hits] == [1, 3]
    assert pod.connections == 1
