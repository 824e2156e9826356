"""L4 authorization and PeerAuthentication in the sandbox: the allow/deny matrix, and `why`.

Four callers with distinct identities (shop/client, shop/intruder, other/client on the other
node, legacy/old outside the mesh) dial the server pod (node2) on ports 9000 and 9001 under one
policy at a time. Each cell checks the real outcome (the TCP echo came back, or the connection
was refused: HBONE 401 for mesh callers, a closed plaintext connection for legacy/old) against
the expected one AND against `ambientctl why` run on the sandbox's own manifest folder.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from ambientctl.debug.state import load_folder
from ambientctl.debug.why import why
from ambientctl.sandbox import Sandbox
from e2e import mesh
from e2e.conftest import NEEDS_ROOT
from meshcore.netns import named_netns, socket_in_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow, NEEDS_ROOT]
SANDBOX_SETS = ("policy",)

CALLERS = ("shop/client", "shop/intruder", "other/client", "legacy/old")
PORTS = (9000, 9001)
SERVER = "shop/server"
Cell = tuple[str, int]


def _policy(name: str, spec: str) -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: shop}}\nspec:\n"
            f"  selector: {{matchLabels: {{app: server}}}}\n{spec}")


def _only(*allowed: Cell) -> dict[Cell, bool]:
    return {(c, p): (c, p) in allowed for c in CALLERS for p in PORTS}


def _all_but(*denied: Cell) -> dict[Cell, bool]:
    return {(c, p): (c, p) not in denied for c in CALLERS for p in PORTS}


def _callers(*names: str, ports: tuple[int, ...] = PORTS) -> list[Cell]:
    return [(c, p) for c in names for p in ports]


# (policy text given the sandbox, expected matrix)
Case = tuple[Callable[[Sandbox], str], dict[Cell, bool]]
CASES = [
    pytest.param(lambda sb: "", _all_but(), id="no-policy-allows-all"),
    pytest.param(
        lambda sb: _policy("allow-principal", """  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]}]
"""), _only(*_callers("shop/client")), id="allow-principal"),
    pytest.param(
        lambda sb: _policy("deny-namespace", """  action: DENY
  rules: [{from: [{source: {namespaces: [other]}}]}]
"""), _all_but(*_callers("other/client")), id="deny-namespace"),
    pytest.param(
        lambda sb: _policy("allow-port", """  action: ALLOW
  rules: [{to: [{operation: {ports: ["9000"]}}]}]
"""), _only(*[(c, 9000) for c in CALLERS]), id="allow-port"),
    pytest.param(
        lambda sb: _policy("allow-ipblock", f"""  action: ALLOW
  rules: [{{from: [{{source: {{ipBlocks: ["{sb.pod_ip('legacy/old')}/32"]}}}}]}}]
"""), _only(*_callers("legacy/old")), id="allow-ipblock"),
    pytest.param(
        lambda sb: _policy("deny-sa-on-port", """  action: DENY
  rules: [{from: [{source: {principals: ["*/sa/intruder"]}}], to: [{operation: {ports: ["9001"]}}]}]
"""), _all_but(("shop/intruder", 9001)), id="deny-principal-suffix-and-port"),
    pytest.param(
        lambda sb: _policy("allow-not-ns", """  action: ALLOW
  rules: [{from: [{source: {notNamespaces: [other]}}]}]
"""), _only(*_callers("shop/client", "shop/intruder", "legacy/old")),
        id="allow-not-namespace-plaintext-has-no-namespace"),  # a negative list with no identity
    # to compare is not hit (ztunnel's Match semantics), so the plaintext caller is allowed
]

PEER_AUTH = [
    pytest.param("PERMISSIVE", "", _all_but(), id="permissive"),
    pytest.param("STRICT", "", _all_but(*_callers("legacy/old")), id="strict"),
    pytest.param("STRICT", """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server-9001, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
  portLevelMtls: {9001: {mode: PERMISSIVE}}
""", _all_but(("legacy/old", 9000)), id="strict-with-permissive-port"),
]


def _check_matrix(sb: Sandbox, expected: dict[Cell, bool]) -> None:
    """Every cell: real outcome == expected == `why` on the sandbox's folder (all cells run)."""
    state = load_folder(str(sb.manifests))
    server_ip = sb.pod_ip(SERVER)
    problems = []
    for (caller, port), want in sorted(expected.items()):
        payload = f"{caller}->{port} {secrets.token_hex(4)}".encode()
        got = mesh.tcp_exchange(sb, caller, server_ip, port, payload)
        real = got.echoed(payload)
        verdict = why(state, caller, f"{server_ip}:{port}")
        if real != want or verdict.allowed != want:
            problems.append(f"{caller} -> {SERVER}:{port}: expected "
                            f"{'allow' if want else 'deny'}, real "
                            f"{'allow' if real else f'deny ({got.error or got.data[:40]!r})'}, "
                            f"why {verdict.outcome} ({verdict.reason})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("policy", "expected"), CASES)
def test_authorization_matrix_and_why_agree(sandbox: Sandbox, policy, expected):
    """Under each AuthorizationPolicy, every caller/port cell is allowed or denied as specified,
    and `ambientctl why` on the sandbox's folder predicts the same outcome."""
    text = policy(sandbox)
    if not text:
        mesh.wait_converged(sandbox)
        _check_matrix(sandbox, expected)
        return
    with mesh.applied(sandbox, "e2e-policy.yaml", text):
        _check_matrix(sandbox, expected)


@pytest.mark.parametrize(("mode", "extra", "expected"), PEER_AUTH)
def test_peer_authentication_strict_refuses_plaintext(sandbox: Sandbox, mode, extra, expected):
    """STRICT refuses the non-mesh caller (plaintext), PERMISSIVE accepts it, a workload's
    portLevelMtls overrides the namespace mode per port; `why` agrees with every cell."""
    text = (f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            f"metadata: {{name: shop-mtls, namespace: shop}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
            f"{extra}")
    with mesh.applied(sandbox, "e2e-peer-authentication.yaml", text):
        _check_matrix(sandbox, expected)


def test_kubelet_probes_from_the_node_bypass_ztunnel_under_strict(sandbox: Sandbox) -> None:
    """A probe from the server's node (a root-owned socket in the node netns, as the kubelet's)
    reaches the app even under STRICT: the node SNATs it to 169.254.7.127, which the in-pod
    rules let through, while the plaintext pod caller stays refused."""
    text = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            "metadata: {name: shop-mtls, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n")
    server_ip = sandbox.pod_ip(SERVER)
    with mesh.applied(sandbox, "e2e-peer-authentication.yaml", text):
        payload = b"probe " + secrets.token_hex(4).encode()
        with socket_in_netns(named_netns(sandbox.node_netns("node2"))) as probe:
            probe.settimeout(5)
            probe.connect((server_ip, 9000))
            probe.sendall(payload)
            got = b""
            while len(got) < len(payload) and (chunk := probe.recv(4096)):
                got += chunk
        assert got == payload
        legacy = mesh.tcp_exchange(sandbox, "legacy/old", server_ip, 9000, payload)
        assert not legacy.echoed(payload)
