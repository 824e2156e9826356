"""`ambientctl why` over manifest folders: decisions and the deciding policy across a matrix."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ambientctl.debug import main
from ambientctl.debug.errors import NotFoundError
from ambientctl.debug.state import load_folder
from ambientctl.debug.why import why
from ambientctl.debug.why_render import decided_by, render, to_dict
from tests.ambientctl.debug.mesh import make_folder, pod

STRICT = "istio-system/istio_converted_static_strict"


def ap(name: str, spec: str, namespace: str = "shop") -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}")


def pa(name: str, mode: str, namespace: str = "shop") -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\n"
            f"spec: {{mtls: {{mode: {mode}}}}}\n")


ALLOW_CLIENT = ap("allow-client", """  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
""")
DENY_OPS_NS = ap("deny-ops", """  action: DENY
  rules: [{from: [{source: {namespaces: [ops]}}]}]
""")
ALLOW_PORT_8080 = ap("allow-8080", """  rules: [{to: [{operation: {ports: ["8080"]}}]}]
""")
ALLOW_PORT_80 = ap("allow-80", """  rules: [{to: [{operation: {ports: ["80"]}}]}]
""")
DENY_IPBLOCK = ap("deny-ops-net", """  action: DENY
  rules: [{from: [{source: {ipBlocks: [10.2.0.0/16]}}]}]
""")
ALLOW_ROOT_NS = ap("allow-from-shop", """  rules: [{from: [{source: {namespaces: [shop]}}]}]
""", namespace="istio-system")
ALLOW_HTTP_THEN_L4 = ap("mixed", """  rules:
  - to: [{operation: {paths: [/admin]}}]
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
""")

MATRIX = [
    pytest.param([ALLOW_CLIENT], "shop/client", "shop/web:80", "allow", "shop/allow-client",
                 "AuthorizationPolicy shop/allow-client spec.rules[0]", id="principal-allow"),
    pytest.param([ALLOW_CLIENT], "ops/tool", "shop/web:80", "deny", None, None,
                 id="principal-not-allowed"),
    pytest.param([DENY_OPS_NS], "ops/tool", "shop/web-1:8080", "deny", "shop/deny-ops",
                 "AuthorizationPolicy shop/deny-ops spec.rules[0]", id="namespace-deny"),
    pytest.param([DENY_OPS_NS], "shop/client", "shop/web-1:8080", "allow", None, None,
                 id="namespace-deny-other-caller"),
    pytest.param([ALLOW_PORT_8080], "ops/tool", "shop/web:80", "allow", "shop/allow-8080",
                 None, id="port-allow-is-target-port"),
    pytest.param([ALLOW_PORT_80], "ops/tool", "shop/web:80", "deny", None, None,
                 id="port-allow-service-port-never-matches"),
    pytest.param([DENY_IPBLOCK], "ops/tool", "10.96.0.10:80", "deny", "shop/deny-ops-net",
                 None, id="ipblock-deny-via-vip"),
    pytest.param([DENY_IPBLOCK], "shop/client", "10.96.0.10:80", "allow", None, None,
                 id="ipblock-deny-other-net"),
    pytest.param([ALLOW_ROOT_NS], "ops/tool", "shop/web-2:8080", "deny", None, None,
                 id="mesh-wide-allow-not-matching"),
    pytest.param([ALLOW_ROOT_NS], "shop/client", "shop/web-2:8080", "allow",
                 "istio-system/allow-from-shop", None, id="mesh-wide-allow"),
    pytest.param([pa("strict", "STRICT")], "legacy/old", "shop/web-1:8080", "deny", STRICT,
                 "mTLS STRICT from PeerAuthentication shop/strict", id="strict-plaintext"),
    pytest.param([pa("strict", "STRICT")], "192.168.7.7", "shop/web:80", "deny", STRICT, None,
                 id="strict-external-ip-via-vip"),
    pytest.param([pa("strict", "STRICT")], "ops/tool", "shop/web-1:8080", "allow", None, None,
                 id="strict-hbone"),
    pytest.param([pa("permissive", "PERMISSIVE")], "legacy/old", "shop/web-1:8080", "allow",
                 None, None, id="permissive-plaintext"),
    pytest.param([pa("root", "STRICT", "istio-system"), pa("permissive", "PERMISSIVE")],
                 "legacy/old", "shop/web-1:8080", "allow", None, None,
                 id="namespace-permissive-beats-mesh-strict"),
    pytest.param([ALLOW_HTTP_THEN_L4], "shop/client", "shop/web-1:8080", "allow", "shop/mixed",
                 "AuthorizationPolicy shop/mixed spec.rules[1]", id="dropped-http-rule-shifts"),
    pytest.param([ALLOW_CLIENT, pa("strict", "STRICT")], "shop/client", "legacy/old:8080",
                 "allow", None, None, id="destination-not-captured"),
]


@pytest.mark.parametrize(("manifests", "src", "dst", "outcome", "policy", "origin"), MATRIX)
def test_why_matrix(tmp_path: Path, manifests: list[str], src: str, dst: str, outcome: str,
                    policy: str | None, origin: str | None) -> None:
    """The outcome and the deciding policy (and the rule or PeerAuthentication behind it)."""
    state = load_folder(make_folder(tmp_path / "m", *manifests))
    result = why(state, src, dst)
    assert result.outcome == outcome, render(state, result)
    got = result.explanation.decision.policy if result.explanation else None
    assert got == policy
    if origin is not None:
        assert (decided_by(state, result) or "").startswith(origin)


def test_plaintext_and_identity_fields(tmp_path: Path) -> None:
    """An uncaptured caller reaches the enforcing ztunnel with no identity; a captured one with
    its own SPIFFE identity, over HBONE to the resolved pod IP and target port."""
    state = load_folder(make_folder(tmp_path / "m", pa("strict", "STRICT")))
    plain = why(state, "legacy/old", "shop/web:80")
    assert plain.transport == "plaintext" and plain.peer_identity is None
    assert "inbound plaintext (15006)" in (plain.enforced_at or "")
    hbone = why(state, "shop/client", "shop/web:80")
    assert str(hbone.peer_identity) == "spiffe://cluster.local/ns/shop/sa/client"
    conn = hbone.explanation.connection if hbone.explanation else None
    assert conn is not None and (str(conn.destination_ip), conn.destination_port) == (
        "10.1.0.10", 8080)


def test_endpoint_choice_is_named_and_overridable(tmp_path: Path) -> None:
    """A service with two endpoints: the first by name is chosen and named; --endpoint picks."""
    state = load_folder(make_folder(tmp_path / "m"))
    first = why(state, "shop/client", "10.96.0.10:80")
    assert first.explanation is not None and first.explanation.connection.destination.name == \
        "web-1"
    assert any("candidates: shop/web-1, shop/web-2" in s for s in first.steps)
    second = why(state, "shop/client", "10.96.0.10:80", endpoint="web-2")
    assert second.explanation is not None
    assert second.explanation.connection.destination.name == "web-2"
    with pytest.raises(NotFoundError, match="not a candidate"):
        why(state, "shop/client", "10.96.0.10:80", endpoint="tool")


WAYPOINT = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  clusterIP: 10.96.0.99
  ports: [{name: mesh, port: 15008}]
"""
WAYPOINT_POD = pod("shop", "waypoint-7d9", "10.1.0.99", sa="waypoint", captured=False,
                   port=15008,
                   extra_labels="gateway.networking.k8s.io/gateway-name: waypoint, "
                                "istio.io/dataplane-mode: none")
USE_WAYPOINT = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: http}]
"""
L7_POLICY = ap("get-only", """  targetRefs: [{kind: Service, group: "", name: web}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
""")
ALLOW_WAYPOINT = ap("allow-waypoint", """  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/waypoint]}}]}]
""")


@pytest.mark.parametrize(("policy", "outcome"), [
    pytest.param(ALLOW_WAYPOINT, "allow", id="allow-waypoint-identity"),
    pytest.param(ALLOW_CLIENT, "deny", id="client-identity-not-seen-after-waypoint"),
])
def test_waypoint_path(tmp_path: Path, policy: str, outcome: str) -> None:
    """Through a waypoint the destination ztunnel sees the waypoint's identity, and the L7
    policies attached to the service are named."""
    folder = make_folder(tmp_path / "m", WAYPOINT, WAYPOINT_POD, L7_POLICY, policy)
    (Path(folder) / "service.yaml").write_text(USE_WAYPOINT)
    state = load_folder(folder)
    result = why(state, "shop/client", "shop/web:80")
    assert result.waypoint is not None, render(state, result)
    assert result.waypoint.gateway == "shop/waypoint"
    assert result.waypoint.l7_policies == ("shop/get-only",)
    assert str(result.peer_identity) == "spiffe://cluster.local/ns/shop/sa/waypoint"
    assert result.outcome == outcome
    assert to_dict(state, result)["waypoint"]["l7_policies"] == ["shop/get-only"]


def test_no_endpoint_is_a_failure_not_a_policy(tmp_path: Path) -> None:
    """A service port without a usable endpoint fails at the source ztunnel (no verdict)."""
    svc = """
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec: {selector: {app: nothing}, clusterIP: 10.96.0.20, ports: [{port: 80}]}
"""
    state = load_folder(make_folder(tmp_path / "m", svc))
    result = why(state, "shop/client", "svc/shop/empty:80")
    assert result.outcome == "fail" and "no healthy upstream" in result.reason
    assert result.explanation is None


def test_assume_captured_for_folders_without_agent_status(tmp_path: Path) -> None:
    """A pod that should be enrolled but is not annotated is plaintext as-is, HBONE assumed."""
    folder = make_folder(tmp_path / "m", pod("ops", "fresh", "10.2.0.9", sa="fresh",
                                             captured=False))
    as_is = why(load_folder(folder), "ops/fresh", "shop/web-1:8080")
    assert as_is.transport == "plaintext"
    assert any("should be in the mesh" in n for n in as_is.notes)
    assumed = why(load_folder(folder, assume_captured=True), "ops/fresh", "shop/web-1:8080")
    assert assumed.transport == "HBONE (mTLS)"


def test_cli_text_json_and_errors(tmp_path: Path) -> None:
    """The command prints the verdict as text or JSON; unknown names exit 2 and say so."""
    folder = make_folder(tmp_path / "m", ALLOW_CLIENT)
    out = io.StringIO()
    assert main(["why", "ops/tool", "shop/web:80", "-f", folder], out=out) == 0
    assert "verdict:     DENY: allow policies exist, but none allowed" in out.getvalue()
    out = io.StringIO()
    assert main(["why", "shop/client", "shop/web:80", "-f", folder, "-o", "json"], out=out) == 0
    data = json.loads(out.getvalue())
    assert (data["allowed"], data["policy"]) == (True, "shop/allow-client")
    err = io.StringIO()
    assert main(["why", "shop/nope", "shop/web:80", "-f", folder], err=err) == 2
    assert "no pod shop/nope" in err.getvalue() and "client" in err.getvalue()
    err = io.StringIO()
    assert main(["why", "shop/client", "shop/web", "-f", folder], err=err) == 2
    assert "DST:PORT" in err.getvalue()


def test_wired_into_ambientctl_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ambientctl why` (the real entry point) runs the registered command."""
    from ambientctl.__main__ import main as ambientctl_main

    folder = make_folder(tmp_path / "m", ALLOW_CLIENT)
    assert ambientctl_main(["why", "shop/client", "shop/web:80", "-f", folder, "-o",
                            "json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "shop/allow-client"
