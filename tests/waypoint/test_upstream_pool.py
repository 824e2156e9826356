"""The waypoint's upstream connection pool with real backends over HBONE: keep-alive reuse,
backends closing idle connections, `Connection: close`, stale connections, HTTP/2
multiplexing and MAX_CONCURRENT_STREAMS."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from tests.waypoint.clients import H2Session, h1_exchange
from tests.waypoint.harness import Env, Pod, host, waypoint_env

pytestmark = pytest.mark.trio


def one_pod(**kw: object) -> list[Pod]:
    return [Pod("reviews-v2-1", "reviews-v2", "127.0.0.13", **kw),  # type: ignore[arg-type]
            Pod("grpc-1", "grpc", "127.0.0.14", kind="h2")]


def pool_stats(env: Env) -> dict[str, object]:
    proxy_stats = env.proxy.downstream.handler.upstreams.statistics()  # type: ignore[attr-defined]
    return proxy_stats["http_pool"]  # type: ignore[no-any-return]


def grpc_request(i: int) -> tuple[list[tuple[str, str]], bytes]:
    return ([(":method", "POST"), (":scheme", "http"), (":authority", host("grpc")),
             (":path", "/echo.Echo/Say"), ("content-type", "application/grpc"),
             ("te", "trailers")], f"msg-{i}".encode())


async def test_sequential_requests_share_one_upstream_connection() -> None:
    """Ten requests, in one downstream tunnel and in ten, reach the pod over one upstream
    connection (the pod accepts one connection)."""
    async with waypoint_env(one_pod()) as env:
        async with env.tunnel("reviews-v2") as t:
            results = await h1_exchange(t, [("GET", f"/{i}", host("reviews-v2"), (), b"")
                                            for i in range(10)])
        for i in range(10):
            status, _, _ = await env.get("reviews-v2", f"/again/{i}")
            assert status == 200
        stats = pool_stats(env)
    assert [s for s, _, _ in results] == [200] * 10
    assert env.pod("reviews-v2-1").connections == 1
    assert stats["opened"] == 1 and stats["reused"] == 19


async def test_backend_closing_idle_connections_causes_no_error() -> None:
    """A backend that closes every connection after its response (idle timeout 0): GETs and
    POSTs all succeed, each on a fresh connection once the waypoint saw the close."""
    async with waypoint_env(one_pod(h1_close="after")) as env:
        statuses = []
        for i in range(6):
            method = "POST" if i % 2 else "GET"
            status, _, body = await env.get("reviews-v2", f"/{i}", method=method, body=b"x")
            statuses.append(status)
            assert json.loads(body)["method"] == method
            await trio.testing.wait_all_tasks_blocked(0.05)  # the close reaches the waypoint
        stats = pool_stats(env)
    assert statuses == [200] * 6
    assert env.pod("reviews-v2-1").connections == 6
    assert len(env.pod("reviews-v2-1").hits) == 6
    assert stats["closed_idle"] == 6 and stats["reused"] == 0


async def test_connection_close_from_the_backend_is_respected() -> None:
    """Responses with `Connection: close` are never followed by another request on that
    connection: three requests, three connections, no errors."""
    async with waypoint_env(one_pod(h1_close="header")) as env, \
            env.tunnel("reviews-v2") as t:
        results = await h1_exchange(t, [("GET", f"/{i}", host("reviews-v2"), (), b"")
                                        for i in range(3)])
        stats = pool_stats(env)
    assert [s for s, _, _ in results] == [200] * 3
    assert env.pod("reviews-v2-1").connections == 3
    assert stats["reused"] == 0


async def test_stale_connection_is_retried_once_for_idempotent_requests() -> None:
    """A reused connection that dies before any response byte (the backend drops the second
    request of each connection): a GET is resent on a fresh connection and succeeds, without
    counting as a retry (attempt count stays 1)."""
    async with waypoint_env(one_pod(h1_close="drop-second")) as env:
        first = await env.get("reviews-v2", "/1")
        second = await env.get("reviews-v2", "/2")
        stats = pool_stats(env)
    assert (first[0], second[0]) == (200, 200)
    hits = env.pod("reviews-v2-1").hits
    assert [h.get("path") or h.get("dropped") for h in hits] == ["/1", "/2", "/2"]
    assert hits[-1]["headers"]["x-envoy-attempt-count"] == "1"  # type: ignore[index]
    assert stats["stale_retries"] == 1


async def test_stale_connection_is_not_resent_for_a_post() -> None:
    """The same stale connection under a POST (written, not idempotent): not resent; the
    client gets the retry policy's answer (503, the default policy does not retry resets)."""
    async with waypoint_env(one_pod(h1_close="drop-second")) as env:
        first = await env.get("reviews-v2", "/1", method="POST", body=b"a")
        second = await env.get("reviews-v2", "/2", method="POST", body=b"b")
        stats = pool_stats(env)
    assert (first[0], second[0]) == (200, 503)
    hits = env.pod("reviews-v2-1").hits
    assert [h.get("path") or h.get("dropped") for h in hits] == ["/1", "/2"]
    assert stats["stale_retries"] == 0


async def test_http2_requests_are_multiplexed_on_one_connection() -> None:
    """Twenty concurrent gRPC calls reach the h2 pod over one connection, all in flight at
    once (the pod answers only when it holds twenty)."""
    pods = [Pod("grpc-1", "grpc", "127.0.0.14", kind="h2", h2_hold=20)]
    async with waypoint_env(pods) as env, env.tunnel("grpc") as t:
        results = await H2Session(t).exchange([grpc_request(i) for i in range(20)])
        stats = pool_stats(env)
    assert [r.status for r in results] == [200] * 20
    assert [r.body for r in results] == [f"msg-{i}".encode() for i in range(20)]
    assert env.pod("grpc-1").connections == 1
    assert env.pod("grpc-1").max_open == 20
    assert stats["opened"] == 1 and stats["h2_streams"] == 20


async def test_http2_respects_max_concurrent_streams() -> None:
    """A pod allowing 5 concurrent streams gets 20 concurrent calls over 4 connections, never
    more than 5 streams open on one."""
    pods = [Pod("grpc-1", "grpc", "127.0.0.14", kind="h2", h2_max_streams=5, h2_hold=20)]
    async with waypoint_env(pods) as env, env.tunnel("grpc") as t:
        results = await H2Session(t).exchange([grpc_request(i) for i in range(20)])
    assert [r.status for r in results] == [200] * 20
    assert env.pod("grpc-1").max_open == 5
    assert env.pod("grpc-1").connections == 4


async def test_http2_goaway_moves_later_requests_to_a_new_connection() -> None:
    """A backend that sends GOAWAY (NO_ERROR) and closes after each answer: three calls in a
    row all succeed, each on a new connection."""
    pods = [Pod("grpc-1", "grpc", "127.0.0.14", kind="h2", h2_goaway_after=1)]
    async with waypoint_env(pods) as env, env.tunnel("grpc") as t:
        session = H2Session(t)
        results = [(await session.exchange([grpc_request(i)]))[0] for i in range(3)]
    assert [r.status for r in results] == [200] * 3
    assert [r.trailers.get("grpc-status") for r in results] == ["0"] * 3
    assert env.pod("grpc-1").connections == 3


async def test_pool_statistics_in_config_dump_shape() -> None:
    """The pool's per-host view lists idle HTTP/1.1 connections after an exchange."""
    async with waypoint_env(one_pod()) as env:
        await env.get("reviews-v2", "/")
        stats = pool_stats(env)
    hosts = stats["hosts"]
    assert isinstance(hosts, dict)
    assert [v for k, v in hosts.items() if k.endswith(" h1")] == [{"idle": 1}]
