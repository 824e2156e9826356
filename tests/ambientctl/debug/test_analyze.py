"""`ambientctl analyze`: each analyzer finds its misconfiguration and stays quiet without it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ambientctl.debug import analyze as az
from ambientctl.debug import main
from ambientctl.debug.state import load_folder
from tests.ambientctl.debug.mesh import make_folder, pod
from tests.ambientctl.debug.test_why import WAYPOINT, ap, pa


def findings(tmp_path: Path, analyzer: az.Analyzer, *manifests: str,
             service: str | None = None) -> list[az.Finding]:
    folder = make_folder(tmp_path / "m", *manifests)
    if service is not None:
        (Path(folder) / "service.yaml").write_text(service)
    state = load_folder(folder)
    return analyzer(state.model, state.mesh)


def svc(labels: str = "", target: str = "http", name: str = "web") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}
spec:
  selector: {{app: web}}
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, targetPort: {target}}}]
"""


ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: "", name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"""

CASES = [
    pytest.param(az.policy_selects_nothing,
                 [ap("typo", "  selector: {matchLabels: {app: wbe}}\n  rules: [{}]\n")], None,
                 [ap("ok", "  selector: {matchLabels: {app: web}}\n  rules: [{}]\n")], None,
                 "policy-selects-nothing", "AuthorizationPolicy shop/typo", id="selects-nothing"),
    pytest.param(az.l7_attributes_at_ztunnel,
                 [ap("get", "  rules: [{to: [{operation: {methods: [GET]}}]}]\n")], None,
                 [ap("get", "  targetRefs: [{kind: Service, group: '', name: web}]\n"
                     "  rules: [{to: [{operation: {methods: [GET]}}]}]\n")], None,
                 "l7-attributes-at-ztunnel", "AuthorizationPolicy shop/get", id="l7-at-ztunnel"),
    pytest.param(az.missing_waypoint, [], svc("istio.io/use-waypoint: wp"),
                 [WAYPOINT], svc("istio.io/use-waypoint: waypoint"),
                 "missing-waypoint", "Service shop/web", id="missing-waypoint"),
    pytest.param(az.missing_waypoint,
                 [pod("shop", "pinned", "10.1.0.30",
                      extra_labels="istio.io/use-waypoint: waypoint"), WAYPOINT], None,
                 [WAYPOINT], svc("istio.io/use-waypoint: waypoint"),
                 "waypoint-for-mismatch", "Pod shop/pinned", id="waypoint-for-service-only"),
    pytest.param(az.strict_with_plaintext_callers, [pa("strict", "STRICT")], None,
                 [pa("strict", "PERMISSIVE")], None,
                 "strict-with-plaintext-callers", "PeerAuthentication shop/strict",
                 id="strict-with-plaintext-callers"),
    pytest.param(az.strict_with_plaintext_callers, [pa("strict", "STRICT", "legacy")], None,
                 [pa("strict", "PERMISSIVE", "legacy")], None,
                 "strict-without-mesh-pods", "PeerAuthentication legacy/strict",
                 id="strict-without-mesh-pods"),
    pytest.param(az.route_without_waypoint, [ROUTE], None,
                 [ROUTE, WAYPOINT], svc("istio.io/use-waypoint: waypoint"),
                 "route-without-waypoint", "HTTPRoute shop/web-split", id="route-no-waypoint"),
    pytest.param(az.unresolved_target_port, [], svc(target="web-port"),
                 [], svc(target="http"),
                 "unresolved-target-port", "Service shop/web", id="named-target-port"),
]


@pytest.mark.parametrize(("analyzer", "bad", "bad_svc", "good", "good_svc", "code", "obj"),
                         CASES)
def test_analyzer_positive_and_negative(
        tmp_path: Path, analyzer: az.Analyzer, bad: list[str], bad_svc: str | None,
        good: list[str], good_svc: str | None, code: str, obj: str) -> None:
    """The analyzer reports the misconfiguration with a fix, and nothing once it is fixed."""
    found = findings(tmp_path / "bad", analyzer, *bad, service=bad_svc)
    assert [(f.code, f.object) for f in found] == [(code, obj)]
    assert found[0].fix and found[0].message
    assert findings(tmp_path / "good", analyzer, *good, service=good_svc) == []


def test_strict_lists_the_plaintext_callers(tmp_path: Path) -> None:
    """The STRICT finding names the mesh pods it covers and the non-mesh pods refused."""
    (found,) = findings(tmp_path, az.strict_with_plaintext_callers, pa("strict", "STRICT"))
    assert "legacy/old" in found.message and "shop/web-1" in found.message
    assert found.severity == "warning"


def test_allow_with_http_attributes_is_an_error_deny_a_warning(tmp_path: Path) -> None:
    """ALLOW rules with HTTP attributes fail closed (error); DENY ones broaden (warning)."""
    (allow,) = findings(tmp_path / "a", az.l7_attributes_at_ztunnel,
                        ap("a", "  rules: [{to: [{operation: {paths: [/x]}}]}]\n"))
    (deny,) = findings(tmp_path / "d", az.l7_attributes_at_ztunnel,
                       ap("d", "  action: DENY\n  rules: [{to: [{operation: {paths: [/x]}}]}]\n"))
    assert (allow.severity, deny.severity) == ("error", "warning")
    assert "targetRefs" in allow.fix


def test_cli_exit_code_text_and_json(tmp_path: Path) -> None:
    """Errors make the command exit 1; a clean folder exits 0; -o json lists the findings."""
    bad = make_folder(tmp_path / "bad", ROUTE)
    out = io.StringIO()
    assert main(["analyze", "-f", bad], out=out) == 1
    assert "route-without-waypoint" in out.getvalue() and "fix: label Service" in out.getvalue()
    out = io.StringIO()
    assert main(["analyze", "-f", bad, "-o", "json"], out=out) == 1
    assert json.loads(out.getvalue())[0]["code"] == "route-without-waypoint"
    out = io.StringIO()
    assert main(["analyze", "-f", make_folder(tmp_path / "good")], out=out) == 0
    assert out.getvalue() == "no problems found\n"


def test_invalid_manifests_are_findings(tmp_path: Path) -> None:
    """An object the model rejects is reported with its file and field."""
    folder = make_folder(tmp_path / "m", ap("bad", "  action: MAYBE\n"))
    state = load_folder(folder)
    found = az.analyze(state.model, state.mesh, state.diagnostics)
    assert [f.code for f in found] == ["invalid-manifest"]
    assert "extra-0.yaml" in found[0].fix and found[0].severity == "error"
