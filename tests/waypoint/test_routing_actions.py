"""Backend choice, filters and local answers (waypoint.routing.actions)."""

from __future__ import annotations

import collections
import dataclasses
import random

import pytest

from waypoint.routing import Backend, Forward, LocalResponse, Request, modify_headers, plan
from waypoint.routing.actions import pick_weighted, redirect_response, rewrite
from waypoint.routing.matching import Selected
from waypoint.routing.types import (
    Fault,
    HeaderModifier,
    Mirror,
    PathKind,
    PathMatch,
    PathModifier,
    Redirect,
    ResponseHeaderModifier,
    Route,
    RouteMatch,
    RouteRule,
    UrlRewrite,
)

V1 = Backend("shop", "reviews", "reviews.shop.svc.cluster.local", 9080, 90)
V2 = Backend("shop", "reviews-v2", "reviews-v2.shop.svc.cluster.local", 9080, 10)
PREFIX_API = RouteMatch(PathMatch(PathKind.PREFIX, "/api"))
REQ = Request("GET", "/api/items?x=1", "reviews.shop:9080", (("host", "reviews.shop:9080"),
                                                            ("x-debug", "1")))


def selected(rule: RouteRule) -> Selected:
    r = Route("shop", "reviews", "", True, 0, (), (rule,))
    return Selected(r, rule, 0, rule.matches[0])


def test_weights_90_10_statistically() -> None:
    """Over 10 000 picks a 90/10 split lands within 1.5 points of 90% (seeded RNG)."""
    rng = random.Random(6)
    counts = collections.Counter(pick_weighted((V1, V2), rng).name for _ in range(10_000))
    assert abs(counts["reviews"] / 10_000 - 0.90) < 0.015
    assert counts["reviews"] + counts["reviews-v2"] == 10_000


def test_weight_zero_never_chosen_and_all_zero_is_none() -> None:
    """A weight-0 backend is never picked; when every weight is 0 nothing is."""
    rng = random.Random(1)
    zero = dataclasses.replace(V2, weight=0)
    assert {pick_weighted((V1, zero), rng).name for _ in range(500)} == {"reviews"}
    assert pick_weighted((dataclasses.replace(V1, weight=0), zero), rng) is None


@pytest.mark.parametrize(("mod", "expected"), [
    pytest.param(HeaderModifier(set=(("x-env", "prod"),)),
                 (("a", "1"), ("a", "2"), ("x-env", "prod")), id="set-replaces-value"),
    pytest.param(HeaderModifier(set=(("x-new", "1"),)),
                 (("a", "1"), ("x-env", "old"), ("a", "2"), ("x-new", "1")),
                 id="set-adds-when-absent"),
    pytest.param(HeaderModifier(set=(("a", "9"),)), (("x-env", "old"), ("a", "9")),
                 id="set-replaces-every-field"),
    pytest.param(HeaderModifier(add=(("a", "3"),)),
                 (("a", "1"), ("x-env", "old"), ("a", "2"), ("a", "3")), id="add-appends"),
    pytest.param(HeaderModifier(remove=("a",)), (("x-env", "old"),), id="remove"),
    pytest.param(HeaderModifier(set=(("a", "9"),), add=(("a", "10"),), remove=("x-env",)),
                 (("a", "9"), ("a", "10")), id="remove-set-add"),
])
def test_header_modifier(mod: HeaderModifier, expected: tuple[tuple[str, str], ...]) -> None:
    """Header modifiers remove, then set, then add."""
    headers = (("a", "1"), ("x-env", "old"), ("a", "2"))
    assert modify_headers(headers, mod) == expected


@pytest.mark.parametrize(("redirect", "req", "location"), [
    pytest.param(Redirect(scheme="https", status_code=301), REQ,
                 "https://reviews.shop/api/items?x=1", id="scheme-change-drops-port"),
    pytest.param(Redirect(hostname="new.example"), REQ,
                 "http://new.example:9080/api/items?x=1", id="host-keeps-request-port"),
    pytest.param(Redirect(port=8443, scheme="https"), REQ,
                 "https://reviews.shop:8443/api/items?x=1", id="explicit-port"),
    pytest.param(Redirect(path=PathModifier(False, "/other")), REQ,
                 "http://reviews.shop:9080/other?x=1", id="full-path"),
    pytest.param(Redirect(path=PathModifier(True, "/v2")), REQ,
                 "http://reviews.shop:9080/v2/items?x=1", id="prefix-path"),
    pytest.param(Redirect(), Request("GET", "/api", "reviews.shop"),
                 "http://reviews.shop/api", id="default-port-omitted"),
])
def test_redirect(redirect: Redirect, req: Request, location: str) -> None:
    """RequestRedirect builds the Location per Gateway API."""
    resp = redirect_response(req, redirect, "/api")
    assert resp.headers == (("location", location),)
    assert resp.status == redirect.status_code


@pytest.mark.parametrize(("rw", "path", "prefix", "expected"), [
    pytest.param(PathModifier(True, "/v2"), "/api/items", "/api", "/v2/items", id="prefix"),
    pytest.param(PathModifier(True, "/"), "/api/items", "/api", "/items", id="strip-prefix"),
    pytest.param(PathModifier(True, "/"), "/api", "/api", "/", id="strip-to-root"),
    pytest.param(PathModifier(True, "/v2/"), "/api", "/api/", "/v2", id="trailing-slashes"),
    pytest.param(PathModifier(False, "/full"), "/api/items?q=1", "/api", "/full?q=1",
                 id="full-keeps-query"),
])
def test_url_rewrite_path(rw: PathModifier, path: str, prefix: str, expected: str) -> None:
    """URLRewrite replaces the full path or the matched prefix, keeping the query."""
    out = rewrite(Request("GET", path, "h"), UrlRewrite(path=rw), prefix)
    assert out.path == expected


def test_url_rewrite_hostname_replaces_authority_and_host() -> None:
    """A hostname rewrite changes :authority and the Host header."""
    out = rewrite(REQ, UrlRewrite(hostname="internal.shop"), None)
    assert out.authority == "internal.shop"
    assert ("host", "internal.shop") in out.headers


def test_plan_applies_filters_and_collects_mirror() -> None:
    """A full rule: headers modified, path rewritten, mirror kept, response modifier passed."""
    rule = RouteRule(
        "r", (PREFIX_API,),
        filters=(HeaderModifier(remove=("x-debug",)), UrlRewrite(path=PathModifier(True, "/v2")),
                 Mirror(V2, 1, 1), ResponseHeaderModifier(HeaderModifier(set=(("x", "y"),)))),
        backends=(V1,), request_timeout=10.0)
    out = plan(selected(rule), REQ, random.Random(0))
    assert isinstance(out, Forward)
    assert out.backend == V1 and out.request.path == "/v2/items?x=1"
    assert ("x-debug", "1") not in out.request.headers
    assert out.mirrors == ((V2, out.request),)
    assert out.response_headers == (HeaderModifier(set=(("x", "y"),)),)
    assert out.request_timeout == 10.0 and out.retry is not None and out.retry.attempts == 2


@pytest.mark.parametrize(("rule", "status", "needle"), [
    pytest.param(RouteRule("r", (PREFIX_API,)), 500, "no backend", id="no-backends"),
    pytest.param(RouteRule("r", (PREFIX_API,), backends=(
        dataclasses.replace(V1, invalid_reason="backendRef Service shop/x not found"),)),
        500, "shop/x not found", id="invalid-backend"),
    pytest.param(RouteRule("r", (PREFIX_API,), backends=(V1,),
                           invalid_reason="filter ExtensionRef is not supported"),
                 500, "ExtensionRef", id="invalid-rule"),
    pytest.param(RouteRule("r", (PREFIX_API,), backends=(V1,),
                           fault=Fault(abort_status=418, abort_percent=100.0)),
                 418, "fault", id="fault-abort"),
    pytest.param(RouteRule("r", (PREFIX_API,), filters=(Redirect(status_code=301),)),
                 301, "redirect", id="redirect-needs-no-backend"),
])
def test_local_responses(rule: RouteRule, status: int, needle: str) -> None:
    """Rules that cannot forward answer locally with the right status and a reason."""
    out = plan(selected(rule), REQ, random.Random(0))
    assert isinstance(out, LocalResponse)
    assert out.status == status and needle in out.reason


def test_fault_percentages() -> None:
    """A 25% delay fault delays about a quarter of requests; 0% abort never aborts."""
    rule = RouteRule("r", (PREFIX_API,), backends=(V1,),
                     fault=Fault(delay=1.5, delay_percent=25.0, abort_status=503,
                                 abort_percent=0.0))
    rng = random.Random(3)
    outs = [plan(selected(rule), REQ, rng) for _ in range(4000)]
    assert all(isinstance(o, Forward) for o in outs)
    delayed = sum(1 for o in outs if isinstance(o, Forward) and o.delay == 1.5)
    assert abs(delayed / 4000 - 0.25) < 0.03
