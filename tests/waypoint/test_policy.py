"""L7 authorization at the waypoint: AuthorizationPolicy YAML → translate → gate → evaluate."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
import yaml

from istiod_lite.translate.l7_policies import translate_l7_policies
from meshcore.identity import SpiffeId
from meshcore.model import ClusterModel
from meshcore.model.folder import parse_file
from meshcore.protos.ambient.waypoint import v1 as pb
from waypoint.policy import (
    L7Policy,
    PolicyConfigError,
    RequestAttributes,
    applicable,
    evaluate,
    path_template_regex,
)

BASE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}]}
"""
WEB = SpiffeId("cluster.local", "shop", "web")
EVIL = SpiffeId("cluster.local", "evil", "default")
HOST = "reviews.shop.svc.cluster.local"


def policies(*specs: dict, action: str = "ALLOW") -> list[L7Policy]:
    """Each spec becomes a policy p<i> targeting the waypoint (action may be in the spec)."""
    docs = [BASE]
    for i, spec in enumerate(specs):
        spec = {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                "name": "waypoint"}], "action": action, **spec}
        docs.append(yaml.safe_dump({"apiVersion": "security.istio.io/v1",
                                    "kind": "AuthorizationPolicy",
                                    "metadata": {"name": f"p{i}", "namespace": "shop"},
                                    "spec": spec}))
    parsed = parse_file("x.yaml", "\n---\n".join(docs).encode(), (0, 0, 0), None)
    assert not parsed.diagnostics, parsed.diagnostics
    out, _ = translate_l7_policies(ClusterModel.from_objects(parsed.objects.values()))
    return [L7Policy.from_proto(pb.L7Authorization.FromString(bytes(m)))
            for m in out.values()]


def req(method: str = "GET", path: str = "/api/items", host: str = "reviews.shop:9080",
        ident: SpiffeId | None = WEB, headers: tuple[tuple[str, str], ...] = (),
        port: int = 9080, ip: str = "10.0.0.5") -> RequestAttributes:
    return RequestAttributes(method, path, host, headers, ident, port,
                             ipaddress.ip_address(ip))


def op(**kw: object) -> dict:
    return {"rules": [{"to": [{"operation": kw}]}]}


def src(**kw: object) -> dict:
    return {"rules": [{"from": [{"source": kw}]}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict:
    c: dict = {"key": key}
    if values:
        c["values"] = values
    if not_values:
        c["notValues"] = not_values
    return {"rules": [{"when": [c]}]}


CASES = [
    pytest.param(op(methods=["GET"]), req(), True, id="method-hit"),
    pytest.param(op(methods=["POST"]), req(), False, id="method-miss"),
    pytest.param(op(notMethods=["DELETE"]), req(), True, id="not-method"),
    pytest.param(op(paths=["/api/items"]), req(path="/api/items?x=1"), True,
                 id="path-ignores-query"),
    pytest.param(op(paths=["/api/*"]), req(), True, id="path-prefix"),
    pytest.param(op(paths=["*/items"]), req(), True, id="path-suffix"),
    pytest.param(op(paths=["/api/{*}"]), req(), True, id="template-one-segment"),
    pytest.param(op(paths=["/{*}"]), req(), False, id="template-star-is-one-segment"),
    pytest.param(op(paths=["/api/{*}/x"]), req(path="/api//x"), False,
                 id="template-star-not-empty"),
    pytest.param(op(paths=["/{**}"]), req(path="/a/b/c"), True, id="template-doublestar-any"),
    pytest.param(op(paths=["/api/{**}"]), req(path="/api/"), True,
                 id="template-doublestar-zero"),
    pytest.param(op(paths=["/{*}/{**}.txt"]), req(path="/a/b/c.txt"), True,
                 id="template-mixed"),
    pytest.param(op(paths=["/{*}/{**}.txt"]), req(path="/a.txt"), False,
                 id="template-mixed-needs-segment"),
    pytest.param(op(hosts=["REVIEWS.shop"]), req(), True, id="host-case-and-port"),
    pytest.param(op(hosts=["reviews.shop:8080"]), req(), False, id="host-with-port-exact"),
    pytest.param(op(hosts=["*.shop"]), req(), True, id="host-suffix"),
    pytest.param(op(ports=["9080"]), req(), True, id="port-hit"),
    pytest.param(op(notPorts=["9080"]), req(), False, id="not-port"),
    pytest.param(src(principals=["cluster.local/ns/shop/sa/web"]), req(), True,
                 id="principal-exact"),
    pytest.param(src(principals=["*"]), req(ident=None), False, id="principal-presence-none"),
    pytest.param(src(principals=["*/sa/web"]), req(), True, id="principal-suffix"),
    pytest.param(src(namespaces=["shop"]), req(ident=EVIL), False, id="namespace-miss"),
    pytest.param(src(notNamespaces=["evil"]), req(), True, id="not-namespace"),
    pytest.param(src(serviceAccounts=["shop/web"]), req(), True, id="service-account"),
    pytest.param(src(requestPrincipals=["*"]), req(), False,
                 id="request-principal-never-present"),
    pytest.param(src(notRequestPrincipals=["*"]), req(), True,
                 id="not-request-principal-always"),
    pytest.param(src(ipBlocks=["10.0.0.0/24"]), req(), True, id="ip-block"),
    pytest.param(when("request.headers[X-User]", ["alice"]), req(headers=(("x-user", "alice"),)),
                 True, id="header-condition"),
    pytest.param(when("request.headers[x-user]", ["*"]), req(), False,
                 id="header-absent-values"),
    pytest.param(when("request.headers[x-user]", None, ["bob"]), req(), True,
                 id="header-absent-notvalues"),
    pytest.param(when("source.namespace", ["shop"]), req(), True, id="when-namespace"),
    pytest.param(when("destination.port", ["9080"]), req(), True, id="when-port"),
    pytest.param(when("source.ip", ["10.0.0.0/8"]), req(), True, id="when-ip"),
    pytest.param(when("request.auth.principal", ["*"]), req(), False, id="when-auth-absent"),
    pytest.param({"rules": [{}]}, req(ident=None), True, id="empty-rule-matches-all"),
    pytest.param({}, req(), False, id="no-rules-never-matches"),
]


@pytest.mark.parametrize(("spec", "request_", "allowed"), CASES)
def test_allow_policy_semantics(spec: dict, request_: RequestAttributes, allowed: bool) -> None:
    """One ALLOW policy: the request is allowed exactly when the policy matches it."""
    decision = evaluate(request_, policies(spec))
    assert decision.allowed is allowed, decision
    assert decision.policy == ("shop/p0" if allowed else None)


def test_deny_before_allow() -> None:
    """A matching DENY wins over a matching ALLOW and names the policy and rule."""
    ps = policies({"action": "ALLOW", "rules": [{}]},
                  {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]},
                                               {"to": [{"operation": {"paths": ["/admin*"]}}]}]})
    d = evaluate(req(path="/admin/x"), ps)
    assert (d.allowed, d.policy, d.rule, d.status) == (False, "shop/p1", 1, 403)
    assert evaluate(req(), ps).policy == "shop/p0"


def test_no_allow_policies_allows() -> None:
    """With only DENY policies, a request none of them matches is allowed by default."""
    d = evaluate(req(), policies(op(methods=["POST"]), action="DENY"))
    assert d.allowed and d.reason == "no allow policies" and d.policy is None


def test_allow_exists_but_none_matches() -> None:
    """With ALLOW policies present, a request none matches is denied."""
    d = evaluate(req(method="PUT"), policies(op(methods=["GET"]), op(methods=["POST"])))
    assert not d.allowed and d.reason == "allow policies exist, but none allowed"


def test_dry_run_observes_only() -> None:
    """A dry-run DENY that matches is recorded but does not deny."""
    (p,) = policies({"rules": [{}]}, action="DENY")
    d = evaluate(req(), [dataclasses.replace(p, dry_run=True)])
    assert d.allowed and d.dry_run == ("dry-run DENY policy shop/p0 rule 0 matched",)


def test_bad_template_in_deny_fails_closed() -> None:
    """An unusable path template in a DENY matches every path (broader deny)."""
    ps = policies(op(paths=["/a/{**}/{*}"]), action="DENY")
    assert not evaluate(req(path="/anything"), ps).allowed


def test_applicable_by_target() -> None:
    """Gateway-targeted policies apply at that waypoint; Service-targeted ones to that host."""
    (gw,) = policies({"rules": [{}]})
    svc = L7Policy("shop", "svc", gw.action, gw.rules, service_hostnames=frozenset({HOST}))
    mesh = L7Policy("istio-system", "all", gw.action, gw.rules, all_waypoints=True)
    assert applicable([gw, svc, mesh], "shop/waypoint", "other.shop.svc.cluster.local") == [
        mesh, gw]
    assert applicable([gw, svc, mesh], "infra/wp", HOST) == [mesh, svc]


@pytest.mark.parametrize(("template", "path", "hit"), [
    pytest.param("/foo/{*}", "/foo/bar", True, id="star"),
    pytest.param("/foo/{*}", "/foo/bar/baz", False, id="star-one-segment"),
    pytest.param("/foo/{**}", "/foo/bar/baz", True, id="doublestar"),
    pytest.param("/foo/{**}/", "/foo/bar/baz/", True, id="doublestar-then-slash"),
    pytest.param("/foo/{*}.txt", "/foo/a.b.txt", True, id="star-in-segment"),
    pytest.param("/a.b/{*}", "/aXb/c", False, id="literal-dot-escaped"),
])
def test_path_template(template: str, path: str, hit: bool) -> None:
    """Path templates: {*} one non-empty segment, {**} anything including slashes."""
    assert (path_template_regex(template).fullmatch(path) is not None) is hit


def test_gate_rejects_bad_cidr() -> None:
    """A malformed CIDR is a PolicyConfigError naming the field."""
    msg = pb.L7Authorization(name="p", namespace="shop",
                             rules=[pb.L7Rule(from_=[pb.L7Source(ip_blocks=["10.0.0.0/99"])])])
    with pytest.raises(PolicyConfigError, match=r"rules\[0\]\.from\[0\]\.ip_blocks"):
        L7Policy.from_proto(msg)
