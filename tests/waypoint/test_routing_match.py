"""Route matching and Gateway API precedence (waypoint.routing.matching), through the gate."""

from __future__ import annotations

import random

import pytest

from meshcore.protos.ambient.waypoint import v1 as pb
from waypoint.routing import (
    Forward,
    LocalResponse,
    Request,
    RouteConfigError,
    RouteTable,
    route_request,
    select,
)

PREFIX, EXACT, REGEX = (pb.PathMatchType.PATH_PREFIX, pb.PathMatchType.EXACT,
                        pb.PathMatchType.REGULAR_EXPRESSION)


def m(path: tuple[pb.PathMatchType, str] | None = None, method: str = "",
      headers: tuple[tuple[str, str], ...] = (), query: tuple[tuple[str, str], ...] = (),
      header_regex: bool = False) -> pb.RouteMatch:
    out = pb.RouteMatch(method=method)
    if path is not None:
        out.path = pb.PathMatch(type=path[0], value=path[1])
    vt = (pb.ValueMatchType.VALUE_REGULAR_EXPRESSION if header_regex
          else pb.ValueMatchType.VALUE_EXACT)
    out.headers = [pb.ValueMatch(name=n, value=v, type=vt) for n, v in headers]
    out.query_params = [pb.ValueMatch(name=n, value=v) for n, v in query]
    return out


def route(name: str, *rules: list[pb.RouteMatch], created: str = "2026-01-01T00:00:00Z",
          ns: str = "shop", gateway: bool = False, hostnames: tuple[str, ...] = (),
          port: int = 0) -> pb.HttpRoute:
    return pb.HttpRoute(
        namespace=ns, name=name, creation_timestamp=created, port=port,
        parent_kind=pb.ParentKind.GATEWAY if gateway else pb.ParentKind.SERVICE,
        hostnames=list(hostnames),
        rules=[pb.RouteRule(name=f"{name}-{i}", matches=ms) for i, ms in enumerate(rules)])


def table(*routes: pb.HttpRoute) -> RouteTable:
    msg = pb.RouteConfiguration(name="shop/reviews.shop.svc.cluster.local",
                                waypoint="shop/waypoint", routes=list(routes))
    return RouteTable.from_proto(pb.RouteConfiguration.FromString(bytes(msg)))


def winner(t: RouteTable, req: Request, port: int = 80) -> str | None:
    s = select(t, req, port)
    return None if s is None else s.rule.name


GET = Request("GET", "/foo/bar?x=1", "reviews.shop:80", (("x-a", "1"), ("x-b", "2")))

# Each case: two competing routes (a is created first); the winner for GET.
PRECEDENCE = [
    pytest.param(route("a", [m((PREFIX, "/foo"))]), route("b", [m((EXACT, "/foo/bar"))]),
                 "b-0", id="exact-beats-prefix"),
    pytest.param(route("a", [m((PREFIX, "/foo"))]), route("b", [m((PREFIX, "/foo/bar"))]),
                 "b-0", id="longest-prefix-wins"),
    pytest.param(route("a", [m((REGEX, "/fo+/.*"))]), route("b", [m((PREFIX, "/"))]),
                 "b-0", id="prefix-beats-regex-as-istio"),
    pytest.param(route("a", [m((PREFIX, "/foo"))]), route("b", [m((PREFIX, "/foo"), "GET")]),
                 "b-0", id="method-breaks-path-tie"),
    pytest.param(route("a", [m((PREFIX, "/foo"), "GET")]),
                 route("b", [m((PREFIX, "/foo"), headers=(("x-a", "1"), ("x-b", "2")))]),
                 "a-0", id="method-beats-headers"),
    pytest.param(route("a", [m((PREFIX, "/foo"), headers=(("x-a", "1"),))]),
                 route("b", [m((PREFIX, "/foo"), headers=(("x-a", "1"), ("x-b", "2")))]),
                 "b-0", id="more-headers-win"),
    pytest.param(route("a", [m((PREFIX, "/foo"), headers=(("x-a", "1"),))]),
                 route("b", [m((PREFIX, "/foo"), query=(("x", "1"),))]),
                 "a-0", id="headers-beat-query"),
    pytest.param(route("a", [m((PREFIX, "/foo"))]), route("b", [m((PREFIX, "/foo"),
                                                                   query=(("x", "1"),))]),
                 "b-0", id="more-query-wins"),
    pytest.param(route("b", [m((PREFIX, "/foo"))], created="2026-01-01T00:00:00Z"),
                 route("a", [m((PREFIX, "/foo"))], created="2026-02-01T00:00:00Z"),
                 "b-0", id="oldest-route-wins"),
    pytest.param(route("b", [m((PREFIX, "/foo"))]), route("a", [m((PREFIX, "/foo"))]),
                 "a-0", id="same-age-name-order"),
    pytest.param(route("a", [m((PREFIX, "/foo"))], [m((PREFIX, "/foo"))]),
                 route("z", [m((PREFIX, "/zzz"))]), "a-0", id="first-rule-in-route"),
    pytest.param(route("a", [m((PREFIX, "/nope"))], [m((PREFIX, "/foo"))]),
                 route("z", [m((PREFIX, "/zzz"))]), "a-1", id="later-rule-when-first-misses"),
    pytest.param(route("a", [m((PREFIX, "/"))]), route("b", [m()]), "a-0",
                 id="any-path-is-last"),
]


@pytest.mark.parametrize(("first", "second", "expected"), PRECEDENCE)
def test_precedence(first: pb.HttpRoute, second: pb.HttpRoute, expected: str) -> None:
    """The Gateway API precedence order picks the expected rule, whatever the input order."""
    assert winner(table(first, second), GET) == expected
    assert winner(table(second, first), GET) == expected


MATCHES = [
    pytest.param(m((PREFIX, "/foo")), "/foo", True, id="prefix-equal"),
    pytest.param(m((PREFIX, "/foo")), "/foo/x", True, id="prefix-child"),
    pytest.param(m((PREFIX, "/foo")), "/foobar", False, id="prefix-is-element-wise"),
    pytest.param(m((PREFIX, "/foo/")), "/foo", True, id="prefix-trailing-slash-ignored"),
    pytest.param(m((PREFIX, "/")), "/anything", True, id="root-prefix"),
    pytest.param(m((EXACT, "/foo")), "/foo?q=1", True, id="exact-ignores-query"),
    pytest.param(m((EXACT, "/foo")), "/foo/", False, id="exact-is-exact"),
    pytest.param(m((REGEX, "/v[0-9]+/.*")), "/v2/x", True, id="regex-full-match"),
    pytest.param(m((REGEX, "/v[0-9]+")), "/v2/x", False, id="regex-not-search"),
    pytest.param(m(method="POST"), "/", False, id="method-mismatch"),
    pytest.param(m(headers=(("X-A", "1"),)), "/", True, id="header-name-case-insensitive"),
    pytest.param(m(headers=(("x-a", "2"),)), "/", False, id="header-value-mismatch"),
    pytest.param(m(headers=(("x-missing", ""),)), "/", False, id="header-absent"),
    pytest.param(m(headers=(("x-b", "[0-9]"),), header_regex=True), "/", True,
                 id="header-regex"),
    pytest.param(m(query=(("q", "1"),)), "/?q=1&q=2", True, id="query-first-value"),
    pytest.param(m(query=(("q", "2"),)), "/?q=1&q=2", False, id="query-only-first-value"),
    pytest.param(m(query=(("Q", "1"),)), "/?q=1", False, id="query-name-case-sensitive"),
]


@pytest.mark.parametrize(("match", "path", "hit"), MATCHES)
def test_match_semantics(match: pb.RouteMatch, path: str, hit: bool) -> None:
    """Each match kind follows the Gateway API semantics."""
    req = Request("GET", path, "reviews", (("x-a", "1"), ("x-b", "2")))
    assert (winner(table(route("a", [match])), req) == "a-0") is hit


def test_repeated_headers_are_joined() -> None:
    """A header sent twice matches its values joined with a comma."""
    req = Request("GET", "/", "h", (("x-v", "a"), ("X-V", "b")))
    assert winner(table(route("a", [m(headers=(("x-v", "a,b"),))])), req) == "a-0"


def test_no_match_is_none() -> None:
    """When no rule matches, select gives None (the proxy answers 404)."""
    assert winner(table(route("a", [m((EXACT, "/x"))])), GET) is None


def test_service_routes_shadow_gateway_routes() -> None:
    """Routes attached to the Service win; Gateway routes apply only without them."""
    gw = route("gw", [m((EXACT, "/foo/bar"))], gateway=True)
    svc = route("svc", [m((PREFIX, "/"))])
    assert winner(table(gw, svc), GET) == "svc-0"
    assert winner(table(gw), GET) == "gw-0"


@pytest.mark.parametrize(("hostnames", "authority", "hit"), [
    pytest.param((), "anything:8080", True, id="no-hostnames-any"),
    pytest.param(("reviews.shop",), "Reviews.Shop:80", True, id="exact-case-and-port"),
    pytest.param(("*.shop",), "reviews.shop", True, id="wildcard"),
    pytest.param(("*.shop",), "shop", False, id="wildcard-needs-a-label"),
    pytest.param(("ratings.shop",), "reviews.shop", False, id="other-host"),
])
def test_gateway_route_hostnames(hostnames: tuple[str, ...], authority: str, hit: bool) -> None:
    """Gateway-attached routes filter on the request host like Gateway API hostnames."""
    t = table(route("gw", [m()], gateway=True, hostnames=hostnames))
    assert (winner(t, Request("GET", "/", authority)) == "gw-0") is hit


def test_service_route_port() -> None:
    """A route attached to one Service port does not take traffic for another port."""
    t = table(route("a", [m()], port=9080))
    assert winner(t, GET, port=9080) == "a-0"
    assert winner(t, GET, port=80) is None


def test_bad_regex_is_rejected_at_the_gate() -> None:
    """An uncompilable regex is a RouteConfigError naming the resource and field."""
    with pytest.raises(RouteConfigError, match=r"routes\[0\]\.rules\[0\]\.matches\[0\]\.path"):
        table(route("a", [m((REGEX, "(unclosed"))]))


def test_no_applicable_route_forwards_to_the_service() -> None:
    """A request no route applies to (other port) goes to the Service; a miss gets 404."""
    msg = pb.RouteConfiguration(name="shop/reviews.shop.svc.cluster.local",
                                service_namespace="shop", service_name="reviews",
                                hostname="reviews.shop.svc.cluster.local",
                                routes=[route("a", [m((EXACT, "/only"))], port=9080)])
    t = RouteTable.from_proto(msg)
    rng = random.Random(0)
    out = route_request(t, GET, 80, rng)
    assert isinstance(out, Forward)
    assert (out.backend.name, out.backend.port, out.route) == ("reviews", 80, "")
    miss = route_request(t, GET, 9080, rng)
    assert isinstance(miss, LocalResponse) and miss.status == 404
