"""The waypoint proxy with real HTTP/1.1 clients over HBONE: routing, policy, local answers."""

from __future__ import annotations

import collections
import json

import pytest
import trio

from meshcore.protos.ambient.waypoint import v1 as pb
from tests.waypoint.clients import h1_exchange
from tests.waypoint.harness import (
    NS,
    backend,
    host,
    prefix,
    route,
    rule,
    waypoint_env,
)

pytestmark = pytest.mark.trio


async def test_plain_service_without_routes_reaches_its_pods() -> None:
    """A Service with no RouteConfiguration: the request reaches one of its pods, with the
    waypoint's trace context and request id added."""
    async with waypoint_env() as env:
        status, headers, body = await env.get("reviews", "/items?x=1")
    assert status == 200
    echoed = json.loads(body)
    assert echoed["pod"] in ("reviews-1", "reviews-2")
    assert echoed["path"] == "/items?x=1"
    assert echoed["headers"]["host"] == host("reviews")
    assert "traceparent" in echoed["headers"]
    assert "x-request-id" in echoed["headers"]
    assert headers["x-pod"] == echoed["pod"]


async def test_keep_alive_serves_several_requests_in_one_tunnel() -> None:
    """Three requests on one HTTP/1.1 connection inside one tunnel all get answers."""
    async with waypoint_env() as env, env.tunnel("reviews") as t:
        results = await h1_exchange(t, [("GET", f"/{i}", host("reviews"), (), b"")
                                        for i in range(3)])
    assert [json.loads(b)["path"] for _, _, b in results] == ["/0", "/1", "/2"]


async def test_weighted_split_is_roughly_90_10() -> None:
    """Over 300 requests a 90/10 weighted rule sends 90% ± 6 points to the first backend."""
    async with waypoint_env() as env, env.tunnel("reviews") as t:
        env.set_routes("reviews", route(rule(backends=[backend("reviews", 90),
                                                       backend("reviews-v2", 10)])))
        results = await h1_exchange(t, [("GET", "/", host("reviews"), (), b"")] * 300)
    counts = collections.Counter(json.loads(b)["pod"].startswith("reviews-v2")
                                 for _, _, b in results)
    assert all(s == 200 for s, _, _ in results)
    assert abs(counts[False] / 300 - 0.9) < 0.06
    assert counts[True] > 0


async def test_header_based_routing() -> None:
    """`x-version: v2` goes to reviews-v2; other requests to reviews."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(
            rule(prefix("/", headers=[pb.ValueMatch(name="x-version", value="v2")]),
                 backends=[backend("reviews-v2")]),
            rule(backends=[backend("reviews")])))
        _, _, v2 = await env.get("reviews", "/", [("X-Version", "v2")])
        _, _, v1 = await env.get("reviews", "/")
    assert json.loads(v2)["pod"] == "reviews-v2-1"
    assert json.loads(v1)["pod"].startswith("reviews-")
    assert not json.loads(v1)["pod"].startswith("reviews-v2")


async def test_l7_policy_denies_a_path_with_403() -> None:
    """A DENY policy on /admin answers 403 RBAC: access denied; other paths pass."""
    async with waypoint_env() as env:
        env.set_policies(pb.L7Authorization(
            name="no-admin", namespace=NS, action=pb.AuthorizationAction.DENY,
            service_hostnames=[host("reviews")],
            rules=[pb.L7Rule(to=[pb.L7Operation(paths=[pb.StringMatch(
                kind=pb.StringMatchKind.MATCH_PREFIX, value="/admin")])])]))
        denied = await env.get("reviews", "/admin/users")
        allowed = await env.get("reviews", "/public")
    assert denied[0] == 403
    assert denied[2] == b"RBAC: access denied\n"
    assert allowed[0] == 200
    assert all(not h["path"].startswith("/admin")  # type: ignore[union-attr]
               for p in env.pods.values() for h in p.hits)


async def test_allow_policy_on_principal_uses_the_mtls_peer() -> None:
    """An ALLOW for the productpage principal lets the client through; one for another
    principal denies it."""
    async with waypoint_env() as env:
        def allow(sa: str) -> pb.L7Authorization:
            return pb.L7Authorization(
                name="allow", namespace=NS, action=pb.AuthorizationAction.ALLOW,
                waypoints=[f"{NS}/waypoint"],
                rules=[pb.L7Rule(from_=[pb.L7Source(principals=[pb.StringMatch(
                    value=f"cluster.local/ns/{NS}/sa/{sa}")])])])
        env.set_policies(allow("productpage"))
        ok = await env.get("reviews")
        env.set_policies(allow("someone-else"))
        no = await env.get("reviews")
    assert (ok[0], no[0]) == (200, 403)


async def test_retries_turn_a_flaky_503_into_200() -> None:
    """A pod answering 503 twice then 200: the default retry policy (2 retries on 503)
    delivers the 200."""
    async with waypoint_env() as env:
        env.pod("reviews-v2-1").fail_first = 2
        status, _, _ = await env.get("reviews-v2", "/")
    assert status == 200
    assert len(env.pod("reviews-v2-1").hits) == 3
    assert [h["headers"]["x-envoy-attempt-count"]  # type: ignore[index]
            for h in env.pod("reviews-v2-1").hits] == ["1", "2", "3"]


async def test_retries_exhausted_returns_the_last_503() -> None:
    """Three 503s in a row (1 try + 2 retries) reach the client as 503."""
    async with waypoint_env() as env:
        env.pod("reviews-v2-1").fail_first = 5
        status, _, body = await env.get("reviews-v2", "/")
    assert status == 503
    assert body == b"flaky\n"
    assert len(env.pod("reviews-v2-1").hits) == 3


async def test_injected_delay_hits_the_request_timeout() -> None:
    """A 100% fault delay of 2 s under a 200 ms request timeout answers 504; no pod is hit."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(
            backends=[backend("reviews")],
            timeouts=pb.Timeouts(request=pb.Duration(millis=200)),
            fault=pb.Fault(delay=pb.FaultDelay(fixed_delay=pb.Duration(millis=2000),
                                               percentage=100)))))
        with trio.fail_after(5):
            status, _, body = await env.get("reviews", "/")
    assert status == 504
    assert body == b"upstream request timeout\n"
    assert not env.pod("reviews-1").hits and not env.pod("reviews-2").hits


async def test_fault_abort_answers_locally() -> None:
    """A 100% abort fault with 418 answers 418 without reaching a pod."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(
            backends=[backend("reviews")],
            fault=pb.Fault(abort=pb.FaultAbort(http_status=418, percentage=100)))))
        status, _, _ = await env.get("reviews", "/")
    assert status == 418
    assert not env.pod("reviews-1").hits and not env.pod("reviews-2").hits


async def test_redirect() -> None:
    """RequestRedirect answers 301 with the Location built from the filter."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(filters=[pb.Filter(
            request_redirect=pb.Redirect(scheme="https", hostname="example.com",
                                         status_code=301))])))
        status, headers, _ = await env.get("reviews", "/a?b=1")
    assert status == 301
    assert headers["location"] == "https://example.com/a?b=1"


async def test_rewrite_path_prefix_and_hostname() -> None:
    """URLRewrite replaces the matched prefix and the Host the pod sees."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(prefix("/api"), backends=[backend("reviews")],
                                             filters=[pb.Filter(url_rewrite=pb.UrlRewrite(
                                                 hostname="internal.local",
                                                 path=pb.PathModifier(
                                                     type=pb.PathModifierType.REPLACE_PREFIX_MATCH,
                                                     value="/v1")))])))
        status, _, body = await env.get("reviews", "/api/items?x=1")
    echoed = json.loads(body)
    assert status == 200
    assert echoed["path"] == "/v1/items?x=1"
    assert echoed["headers"]["host"] == "internal.local"


async def test_request_and_response_header_modifiers() -> None:
    """Request headers are set/added/removed before the pod; response headers after."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(backends=[backend("reviews")], filters=[
            pb.Filter(request_header_modifier=pb.HeaderModifier(
                set=[pb.Header(name="x-env", value="prod")],
                add=[pb.Header(name="x-added", value="1")], remove=["x-secret"])),
            pb.Filter(response_header_modifier=pb.HeaderModifier(
                set=[pb.Header(name="x-pod", value="hidden")],
                add=[pb.Header(name="x-served-by", value="waypoint")]))])))
        status, headers, body = await env.get(
            "reviews", "/", [("x-env", "dev"), ("x-secret", "s3cr3t")])
    seen = json.loads(body)["headers"]
    assert status == 200
    assert seen["x-env"] == "prod" and seen["x-added"] == "1" and "x-secret" not in seen
    assert headers["x-pod"] == "hidden" and headers["x-served-by"] == "waypoint"


async def test_missing_backend_is_500_with_the_reason_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """A rule whose backendRef is invalid answers 500; the access log names the reason."""
    caplog.set_level("INFO", logger="access")
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(backends=[backend(
            "nope", invalid_reason="BackendNotFound: Service shop/nope not found")])))
        status, _, body = await env.get("reviews", "/")
    assert status == 500
    assert b"BackendNotFound" in body
    lines = [r.getMessage() for r in caplog.records if r.name == "access"]
    assert any("BackendNotFound" in line and "500" in line for line in lines)


async def test_backend_service_unknown_to_the_waypoint_is_500() -> None:
    """A valid-looking backendRef whose Service the waypoint does not know answers 500."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(backends=[backend("not-in-wds")])))
        status, _, body = await env.get("reviews", "/")
    assert status == 500
    assert b"not known to the waypoint" in body


async def test_no_route_matches_is_404() -> None:
    """Routes exist for the Service but none matches the path: 404."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(prefix("/only"), backends=[backend("reviews")])))
        status, _, _ = await env.get("reviews", "/other")
    assert status == 404


async def test_mirror_sends_a_copy() -> None:
    """A RequestMirror filter copies the request to the mirror backend; the client gets the
    primary's answer."""
    async with waypoint_env() as env:
        env.set_routes("reviews", route(rule(backends=[backend("reviews")], filters=[
            pb.Filter(request_mirror=pb.Mirror(backend=backend("reviews-v2"), numerator=100,
                                               denominator=100))])))
        status, _, body = await env.get("reviews", "/m")
        with trio.fail_after(5):
            await env.pod("reviews-v2-1").hit.wait()
    assert status == 200 and not json.loads(body)["pod"].startswith("reviews-v2")
    assert env.pod("reviews-v2-1").hits[0]["headers"]["host"] == (  # type: ignore[index]
        f"{host('reviews')}-shadow")
