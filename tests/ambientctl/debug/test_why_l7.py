"""`ambientctl why` with an HTTP request: the waypoint's L7 AuthorizationPolicies evaluated on the
folder's translation, combined with L4, and agreeing with a real waypoint."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ambientctl.debug import main
from ambientctl.debug.state import MeshState, load_folder
from ambientctl.debug.why import WhyResult, why
from ambientctl.debug.why_l7 import HttpRequest, RequestOptionError
from ambientctl.debug.why_render import decided_by, render, to_dict
from tests.ambientctl.debug.mesh import make_folder, pod
from tests.ambientctl.debug.test_why import (
    ALLOW_WAYPOINT,
    USE_WAYPOINT,
    WAYPOINT,
    WAYPOINT_POD,
    ap,
)


def gateway(name: str) -> str:
    """A targetRefs entry for waypoint Gateway `name`."""
    return f"{{kind: Gateway, group: gateway.networking.k8s.io, name: {name}}}"


def targets(*refs: str) -> str:
    """The spec's targetRefs line."""
    return f"  targetRefs: [{', '.join(refs)}]\n"


DENY_ADMIN = ap("deny-admin", targets(gateway("waypoint")) + """  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
""")
CLIENT_GET = ap("client-get", """  targetRefs: [{kind: Service, group: "", name: web}]
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
    to: [{operation: {methods: [GET]}}]
""")
DENY_BETA = ap("deny-beta", """  targetRefs: [{kind: Service, group: "", name: web}]
  action: DENY
  rules: [{when: [{key: "request.headers[x-channel]", values: [beta]}]}]
""")
# Everything-denying policies bound elsewhere: another Service, another waypoint.
OTHER_TARGETS = ap("deny-api", """  targetRefs: [{kind: Service, group: "", name: api}]
  action: DENY
  rules: [{}]
""") + "---\n" + ap("deny-other-wp", targets(gateway("other-wp")) + """  action: DENY
  rules: [{}]
""") + """---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop, labels: {istio.io/use-waypoint: other-wp}}
spec: {selector: {app: web}, clusterIP: 10.96.0.30, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other-wp, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""
# Rule 0 uses a `when` key the waypoint cannot evaluate: the ALLOW translation drops it, so the
# waypoint's rule 0 is spec.rules[1].
SHIFTED = ap("shifted", """  targetRefs: [{kind: Service, group: "", name: web}]
  rules:
  - when: [{key: experimental.envoy.filters.x, values: ["1"]}]
  - to: [{operation: {paths: [/ok]}}]
""")


def mesh(tmp_path: Path, *policies: str) -> MeshState:
    """shop/web behind waypoint shop/waypoint, L4 allowing the waypoint, and `policies`."""
    folder = make_folder(tmp_path / "m", WAYPOINT, WAYPOINT_POD, ALLOW_WAYPOINT, *policies)
    (Path(folder) / "service.yaml").write_text(USE_WAYPOINT)
    return load_folder(folder)


def ask(state: MeshState, method: str = "GET", path: str = "/", src: str = "shop/client",
        headers: tuple[tuple[str, str], ...] = ()) -> WhyResult:
    result = why(state, src, "shop/web:80", request=HttpRequest(method, path, None, headers))
    assert result.waypoint is not None and result.l7 is not None, render(state, result)
    return result


def test_deny_on_a_path_names_the_policy(tmp_path: Path) -> None:
    """A DENY on /admin* at the waypoint denies /admin/x (policy and rule named), allows /home."""
    state = mesh(tmp_path, DENY_ADMIN)
    denied, allowed = ask(state, path="/admin/users"), ask(state, path="/home")
    assert denied.outcome == "deny"
    assert denied.l7 is not None and denied.l7.decision.policy == "shop/deny-admin"
    assert decided_by(state, denied) == ("L7 DENY AuthorizationPolicy shop/deny-admin "
                                         "spec.rules[0] at waypoint shop/waypoint")
    assert denied.explanation is None  # the request never leaves the waypoint
    assert allowed.outcome == "allow", render(state, allowed)
    assert allowed.l7 is not None and allowed.l7.decision.policy is None
    assert allowed.explanation is not None  # L4 at the destination still decided
    assert "L4 at the destination" in allowed.reason


@pytest.mark.parametrize(("src", "method", "outcome", "reason"), [
    pytest.param("shop/client", "GET", "allow", "allowed by shop/client-get", id="caller-get"),
    pytest.param("shop/client", "POST", "deny", "none allowed", id="caller-post"),
    pytest.param("ops/tool", "GET", "deny", "none allowed", id="other-caller-get"),
])
def test_allow_on_a_method_for_a_principal(tmp_path: Path, src: str, method: str,
                                          outcome: str, reason: str) -> None:
    """An ALLOW of GET for the client principal lets only that caller's GETs through."""
    state = mesh(tmp_path, CLIENT_GET)
    result = ask(state, method, src=src)
    assert result.outcome == outcome, render(state, result)
    assert result.l7 is not None and reason in result.l7.decision.reason


@pytest.mark.parametrize(("headers", "outcome"), [
    pytest.param((("x-channel", "beta"),), "deny", id="header-matches"),
    pytest.param((("x-channel", "stable"),), "allow", id="other-value"),
    pytest.param((), "allow", id="header-absent"),
])
def test_header_condition(tmp_path: Path, headers: tuple[tuple[str, str], ...],
                          outcome: str) -> None:
    """A DENY with a request.headers[x-channel] condition denies only that header value."""
    result = ask(mesh(tmp_path, DENY_BETA), headers=headers)
    assert result.outcome == outcome


def test_policies_bound_elsewhere_do_not_apply(tmp_path: Path) -> None:
    """Deny-all policies on another Service and another waypoint are translated but do not
    apply to shop/web at shop/waypoint."""
    state = mesh(tmp_path, OTHER_TARGETS)
    assert {"shop/deny-api", "shop/deny-other-wp"} <= set(state.resources.l7_authorizations)
    result = ask(state, path="/admin")
    assert result.outcome == "allow", render(state, result)
    assert result.l7 is not None and result.l7.applicable == ()
    assert result.l7.decided_by() == "no L7 policy applies at the waypoint"
    assert result.waypoint is not None and result.waypoint.l7_policies == ()


def test_rule_index_maps_back_to_spec_rules(tmp_path: Path) -> None:
    """When the translation drops an ALLOW rule, the deciding rule is named by its spec index."""
    state = mesh(tmp_path, SHIFTED)
    result = ask(state, path="/ok")
    assert result.l7 is not None and (result.l7.decision.rule, result.l7.spec_rule) == (0, 1)
    assert ask(state, path="/other").outcome == "deny"


def test_without_a_request_l7_is_listed_and_the_options_named(tmp_path: Path) -> None:
    """No request options: the L4 verdict as before, the applicable L7 policies listed and the
    options that would evaluate them named."""
    state = mesh(tmp_path, DENY_ADMIN, CLIENT_GET)
    result = why(state, "shop/client", "shop/web:80")
    assert result.l7 is None and result.outcome == "allow"
    assert result.waypoint is not None
    assert result.waypoint.l7_policies == ("shop/client-get", "shop/deny-admin")
    assert result.l7_skipped is not None and "--method, --path" in result.l7_skipped
    assert to_dict(state, result)["l7"] == {"evaluated": False, "reason": result.l7_skipped}


def test_request_without_a_waypoint_says_l7_is_not_evaluated(tmp_path: Path) -> None:
    """Request options on a path without a waypoint: L4 only, and the output says so."""
    state = load_folder(make_folder(tmp_path / "m", DENY_ADMIN))
    result = why(state, "shop/client", "shop/web:80", request=HttpRequest(path="/admin"))
    assert result.outcome == "allow" and result.l7 is None
    assert result.l7_skipped is not None and "does not go through a waypoint" in result.l7_skipped


def test_header_option_parsing() -> None:
    """--header takes NAME=VALUE (or NAME:VALUE), names lower-cased; a bad one is an error."""
    req = HttpRequest.from_options(None, None, None, ["X-User=alice", "x-b: 1"])
    assert req == HttpRequest("GET", "/", None, (("x-user", "alice"), ("x-b", "1")))
    assert HttpRequest.from_options(None, None, None, None) is None
    with pytest.raises(RequestOptionError, match="NAME=VALUE"):
        HttpRequest.from_options(None, None, None, ["novalue"])
    with pytest.raises(RequestOptionError, match="starts with /"):
        HttpRequest.from_options(None, "admin", None, None)


def test_cli_text_and_json(tmp_path: Path) -> None:
    """`why --method/--path/--header` prints the L7 decision as text and JSON."""
    folder = make_folder(tmp_path / "m", WAYPOINT, WAYPOINT_POD, ALLOW_WAYPOINT, DENY_ADMIN)
    (Path(folder) / "service.yaml").write_text(USE_WAYPOINT)
    args = ["why", "shop/client", "shop/web:80", "-f", folder, "--method", "post", "--path",
            "/admin/x?y=1", "--header", "x-user=alice"]
    out = io.StringIO()
    assert main(args, out=out) == 0
    text = out.getvalue()
    assert "verdict:     DENY: L7 at waypoint shop/waypoint: denied by shop/deny-admin" in text
    assert ("decided by:  L7 DENY AuthorizationPolicy shop/deny-admin spec.rules[0] at waypoint "
            "shop/waypoint") in text
    assert ("L7 request:  POST /admin/x?y=1, host web.shop.svc.cluster.local, x-user: alice"
            in text)
    out = io.StringIO()
    assert main([*args, "-o", "json"], out=out) == 0
    data = json.loads(out.getvalue())
    assert (data["outcome"], data["l7"]["policy"], data["l7"]["spec_rule"]) == (
        "deny", "shop/deny-admin", 0)
    assert data["l7"]["request"]["source_principal"] == "cluster.local/ns/shop/sa/client"
    assert data["l7"]["request"]["destination_ip"] == "10.96.0.10"
    assert data["l7"]["applicable"] == [
        {"name": "shop/deny-admin", "action": "DENY", "dry_run": False}]
    err = io.StringIO()
    assert main([*args[:5], "--header", "oops"], err=err) == 2
    assert "NAME=VALUE" in err.getvalue()


# ---- agreement with a real waypoint -------------------------------------------------------
# The waypoint harness (tests/waypoint/harness.py): Service shop/reviews at 10.96.0.10:9080,
# waypoint shop/waypoint, client identity shop/productpage from 10.1.2.3 (`forwarded`).
REVIEWS = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080}]
"""
HARNESS_PODS = "---".join([
    pod("shop", "productpage-1", "10.1.2.3", sa="productpage", app="productpage"),
    pod("shop", "reviews-1", "10.1.0.31", sa="reviews", app="reviews", port=9080),
])
MATRIX_POLICIES = [
    ap("no-admin", """  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""),
    ap("productpage-reads", targets(gateway("waypoint")) + """  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]
    to: [{operation: {methods: [GET, HEAD]}}]
  - when: [{key: "request.headers[x-role]", values: [admin]}]
"""),
    ap("internal-from-mesh-ips", """  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: DENY
  rules:
  - to: [{operation: {paths: [/internal]}}]
    when: [{key: source.ip, values: [10.1.2.0/24]}]
"""),
]
MATRIX = [("GET", "/", ()), ("GET", "/items?q=1", ()), ("GET", "/admin/users", ()),
          ("POST", "/", ()), ("POST", "/", (("x-role", "admin"),)),
          ("PUT", "/x", (("x-role", "user"),)), ("GET", "/internal", ())]


@pytest.mark.trio
async def test_verdicts_agree_with_a_real_waypoint(tmp_path: Path) -> None:
    """For a matrix of requests, `why`'s L7 decision is the real waypoint's answer (403 or not)
    when the waypoint is fed the same istiod-lite translation of the folder."""
    from tests.waypoint.harness import waypoint_env

    folder = make_folder(tmp_path / "m", WAYPOINT, WAYPOINT_POD, REVIEWS, HARNESS_PODS,
                         *MATRIX_POLICIES)
    state = load_folder(folder)
    predicted = []
    for method, path, headers in MATRIX:
        result = why(state, "shop/productpage-1", "shop/reviews:9080",
                     request=HttpRequest(method, path, None, headers))
        assert result.l7 is not None, render(state, result)
        predicted.append(result.l7.decision.allowed)
    assert set(predicted) == {True, False}  # the matrix exercises both answers
    async with waypoint_env() as env:
        env.set_policies(*state.resources.l7_authorizations.values())
        answered = [(await env.get("reviews", path, headers, method))[0] != 403
                    for method, path, headers in MATRIX]
    assert answered == predicted


def test_dry_run_policy_only_observes(tmp_path: Path) -> None:
    """A dry-run L7 DENY that matches does not deny; the output says what it would have done."""
    dry = DENY_ADMIN.replace("metadata: {name: deny-admin, namespace: shop}",
                             "metadata: {name: deny-admin, namespace: shop, annotations: "
                             "{istio.io/dry-run: \"true\"}}")
    state = mesh(tmp_path, dry)
    result = ask(state, path="/admin")
    assert result.outcome == "allow", render(state, result)
    assert "L7 dry-run:  dry-run DENY policy shop/deny-admin rule 0 matched" in render(
        state, result)
