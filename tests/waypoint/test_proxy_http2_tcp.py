"""The waypoint proxy with HTTP/2 (gRPC-ish) and TCP clients over HBONE, bad input, outliers,
telemetry."""

from __future__ import annotations

import json

import pytest
import trio

from meshcore.hbone_trio import HboneStatusError
from meshcore.protos.ambient.waypoint import v1 as pb
from tests.waypoint.clients import H2Session, h1_exchange
from tests.waypoint.harness import (
    CLIENT,
    NS,
    VIPS,
    WAYPOINT,
    host,
    waypoint_env,
)
from waypoint.http import Limits

pytestmark = pytest.mark.trio
FOUR_MIB = Limits(max_request_body=4 * 1024 * 1024)


def grpc_request(path: str = "/echo.Echo/Say") -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":authority", host("grpc") + ":9080"),
            (":path", path), ("content-type", "application/grpc"), ("te", "trailers")]


async def test_grpc_request_gets_body_and_trailers() -> None:
    """A gRPC-style HTTP/2 request reaches the h2 pod; body and grpc-status trailers return."""
    message = b"\x00\x00\x00\x00\x05hello"
    async with waypoint_env() as env, env.tunnel("grpc") as t:
        session = H2Session(t)
        (res,) = await session.exchange([(grpc_request(), message)])
    assert not session.goaway
    assert res.status == 200
    assert res.headers["content-type"] == "application/grpc"
    assert res.body == message
    assert res.trailers == {"grpc-status": "0", "grpc-message": "ok"}
    hit = env.pod("grpc-1").hits[0]
    assert hit["headers"]["te"] == "trailers"  # type: ignore[index]
    assert hit["body"] == message


async def test_http2_multiplexes_concurrent_streams_in_one_tunnel() -> None:
    """Twenty concurrent HTTP/2 streams in one tunnel all complete with their own bodies."""
    async with waypoint_env() as env, env.tunnel("grpc") as t:
        results = await H2Session(t).exchange(
            [(grpc_request(f"/echo.Echo/{i}"), f"msg-{i}".encode()) for i in range(20)])
    assert [r.body for r in results] == [f"msg-{i}".encode() for i in range(20)]
    assert len(env.pod("grpc-1").hits) == 20


async def test_http2_protocol_violation_closes_only_that_tunnel() -> None:
    """A DATA frame on stream 0 gets GOAWAY on that tunnel; another tunnel keeps working."""
    bad_frame = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # DATA, stream 0: PROTOCOL_ERROR
    async with waypoint_env() as env, env.tunnel("grpc") as good:
        session = H2Session(good)
        (first,) = await session.exchange([(grpc_request(), b"a")])
        async with env.tunnel("grpc") as bad:
            bad_session = H2Session(bad)
            await bad_session.exchange([], raw=bad_frame)
        (again,) = await session.exchange([(grpc_request(), b"b")])
    assert bad_session.goaway
    assert (first.status, again.status) == (200, 200)


async def test_http2_oversize_body_gets_413_on_that_stream() -> None:
    """An HTTP/2 request body streaming over a 4 MiB limit gets 413 (no response had started)
    and the upstream stream is reset: the pod never sees a complete request."""
    async with waypoint_env(limits=FOUR_MIB) as env, env.tunnel("grpc") as t:
        (res,) = await H2Session(t).exchange([(grpc_request(), b"x" * (5 * 1024 * 1024))])
    assert res.status == 413
    assert not env.pod("grpc-1").hits


async def test_malformed_http1_gets_400_and_another_tunnel_keeps_working() -> None:
    """Garbage HTTP/1.1 gets 400 and its tunnel closes; a keep-alive tunnel opened before
    still serves requests."""
    async with waypoint_env() as env, env.tunnel("reviews") as good:
        (r1,) = await h1_exchange(good, [("GET", "/1", host("reviews"), (), b"")])
        async with env.tunnel("reviews") as bad:
            await bad.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n")
            answer = b""
            while chunk := await bad.receive_some():
                answer += chunk
        (r2,) = await h1_exchange(good, [("GET", "/2", host("reviews"), (), b"")])
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert (r1[0], r2[0]) == (200, 200)


@pytest.mark.parametrize(("raw", "status"), [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431,
                 id="headers-too-large"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n", 413,
                 id="body-too-large"),
])
async def test_oversize_http1_requests(raw: bytes, status: int) -> None:
    """Too-large headers get 431 and a too-large declared body 413, then the tunnel closes."""
    async with waypoint_env(limits=FOUR_MIB) as env, env.tunnel("reviews") as t:
        await t.send_all(raw)
        answer = b""
        while chunk := await t.receive_some():
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert not env.pod("reviews-1").hits and not env.pod("reviews-2").hits


async def test_tcp_service_is_relayed_to_a_pod() -> None:
    """A Service port declared TCP is relayed byte for byte to its pod (tcp_proxy)."""
    async with waypoint_env() as env, env.tunnel("tcp-echo") as t:
        await t.send_all(b"\x00\x01binary, not http")
        got = b""
        while len(got) < 18:
            got += await t.receive_some()
    assert got == b"\x00\x01binary, not http"
    assert env.pod("tcp-1").hits


async def test_unknown_destination_is_refused_at_connect() -> None:
    """A CONNECT to an address that is neither a Service VIP nor a pod gets 503."""
    async with waypoint_env() as env:
        with pytest.raises(HboneStatusError) as info:
            await env.client.connect(  # type: ignore[attr-defined]
                env.waypoint_addr, "10.99.0.1:80", CLIENT, [WAYPOINT.identity])
    assert info.value.status == 503


async def test_outlier_detection_ejects_a_failing_pod() -> None:
    """A pod that always answers 503 is ejected after 5 consecutive failures; every client
    request still succeeds (retries go to the other pod)."""
    async with waypoint_env() as env, env.tunnel("reviews") as t:
        env.pod("reviews-1").fail_first = 10_000
        results = await h1_exchange(t, [("GET", "/", host("reviews"), (), b"")] * 40)
    assert all(s == 200 for s, _, _ in results)
    assert len(env.pod("reviews-1").hits) == 5
    assert all(json.loads(b)["pod"] == "reviews-2" for _, _, b in results)


async def test_metrics_and_access_log_for_a_request(caplog: pytest.LogCaptureFixture) -> None:
    """A request is counted in istio_requests_total with reporter waypoint and logged."""
    caplog.set_level("INFO", logger="access")
    async with waypoint_env() as env:
        await env.get("reviews", "/x")
        text = env.observers.metrics.render()
    line = next(ln for ln in text.splitlines() if ln.startswith("istio_requests_total{"))
    assert 'reporter="waypoint"' in line
    assert 'response_code="200"' in line
    assert 'source_principal="spiffe://cluster.local/ns/shop/sa/productpage"' in line
    assert f'destination_service="{host("reviews")}"' in line
    assert 'source_workload="productpage"' in line
    logs = [r.getMessage() for r in caplog.records if r.name == "access"]
    assert any("request complete" in m and "/x" in m for m in logs)


async def test_vips_table_is_consistent() -> None:
    """Harness sanity: every Service VIP is distinct (the waypoint keys tunnels by VIP)."""
    assert len(set(VIPS.values())) == len(VIPS)
    await trio.lowlevel.checkpoint()


async def test_http2_client_reaches_an_http1_app() -> None:
    """A non-gRPC HTTP/2 request to an undeclared port reaches an HTTP/1.1-only pod."""
    async with waypoint_env() as env, env.tunnel("reviews") as t:
        (res,) = await H2Session(t).exchange([(
            [(":method", "GET"), (":scheme", "http"), (":authority", host("reviews")),
             (":path", "/h2")], b"")])
    assert res.status == 200
    assert json.loads(res.body)["path"] == "/h2"


async def test_tcp_service_denied_by_policy_at_connect() -> None:
    """An L7 DENY from the client's namespace refuses a TCP-declared Service's CONNECT (401)."""
    async with waypoint_env() as env:
        env.set_policies(pb.L7Authorization(
            name="deny-shop", namespace=NS, action=pb.AuthorizationAction.DENY,
            service_hostnames=[host("tcp-echo")],
            rules=[pb.L7Rule(from_=[pb.L7Source(namespaces=[pb.StringMatch(value=NS)])])]))
        with pytest.raises(HboneStatusError) as info:
            async with env.tunnel("tcp-echo"):
                pass
    assert info.value.status == 401
    assert not env.pod("tcp-1").hits
