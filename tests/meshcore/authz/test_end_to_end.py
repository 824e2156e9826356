"""End to end: AuthorizationPolicy / PeerAuthentication YAML → istiod_lite translate → protobuf
bytes → wds Store (the `from_proto` gate) → policy selection → evaluate, for a caller matrix.

Nothing is built by hand between the manifests and the decision: the destination workload is
the one the Store indexed by IP, and its policies are what `policies_for` selects.
"""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from istiod_lite.translate import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, MeshConfig, translate
from meshcore.authz import ConnectionAttributes, evaluate_in, explain_in
from meshcore.identity import SpiffeId
from meshcore.model import ClusterModel, parse_object
from meshcore.wds import Snapshot, Store
from meshcore.wds.store import to_update

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy, labels: {istio.io/dataplane-mode: ambient}}
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}},
           annotations: {{ambient.istio.io/redirection: enabled}}}}
spec: {{nodeName: node-1, serviceAccountName: {app}, containers: [{{name: main}}]}}
status: {{podIP: {ip}, conditions: [{{type: Ready, status: "True"}}]}}
""" for name, ns, app, ip in [
    ("web-1", "shop", "web", "10.244.1.5"), ("db-1", "shop", "db", "10.244.1.6"),
    ("vault-1", "shop", "vault", "10.244.1.7"), ("console-1", "shop", "console", "10.244.1.8"),
    ("deployer-1", "ops", "deployer", "10.244.2.5"), ("old-1", "legacy", "old", "10.244.3.5"),
]) + """---
# Mesh-wide DENY: the legacy subnet may not reach any port 5432.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: block-legacy, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: ["10.244.3.0/24"]}}], to: [{operation: {ports: ["5432"]}}]}]
---
# Namespace-wide DENY in shop: nobody reaches port 9999.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-debug-port, namespace: shop}
spec:
  action: DENY
  rules: [{when: [{key: destination.port, values: ["9999"]}]}]
---
# web: shop identities on 8080; ops from its subnet on any port; HTTP rule dropped (ALLOW).
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/*"]}}]
    to: [{operation: {ports: ["8080", "9999"]}}]
  - from: [{source: {namespaces: ["ops"], ipBlocks: ["10.244.2.0/24"]}}]
  - from: [{source: {namespaces: ["monitoring"]}}]
    to: [{operation: {methods: ["GET"]}}]
---
# db: deny anything not from the shop namespace (plaintext included: it has no namespace).
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-deny-foreign, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules: [{from: [{source: {notNamespaces: ["shop"]}}]}]
---
# console: the deployer service account only, as a dry run (observed, not enforced).
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: console-dry, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: console}}
  rules: [{from: [{source: {serviceAccounts: ["ops/deployer"]}}]}]
---
# STRICT: the vault workload, and the whole ops namespace.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: vault-strict, namespace: shop}
spec: {selector: {matchLabels: {app: vault}}, mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: ops}
spec: {mtls: {mode: STRICT}}
---
# console: plaintext refused on 9443 only (port-level STRICT under PERMISSIVE).
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: console-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: console}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {"9443": {mode: STRICT}}
"""


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    objects = [parse_object(doc) for doc in yaml.safe_load_all(MANIFESTS) if doc]
    resources = translate(ClusterModel.from_objects(objects), MeshConfig(enable_dry_run=True))
    store = Store()
    for type_url in (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL):
        store.apply(type_url, [to_update(name, msg)
                               for name, msg in resources.resources(type_url).items()])
    return store.snapshot


CALLERS = {
    "shop-front": ("spiffe://cluster.local/ns/shop/sa/front", "10.244.1.9"),
    "ops-deployer": ("spiffe://cluster.local/ns/ops/sa/deployer", "10.244.2.5"),
    "ops-deployer-offnet": ("spiffe://cluster.local/ns/ops/sa/deployer", "10.244.9.9"),
    "monitoring": ("spiffe://cluster.local/ns/monitoring/sa/prom", "10.244.4.5"),
    "legacy-plaintext": (None, "10.244.3.5"),
    "other-plaintext": (None, "10.244.5.5"),
}
DENIED_BY = "explicitly denied by: "
NONE_ALLOWED = "allow policies exist, but none allowed"

P = pytest.param
MATRIX = [
    # web: selector ALLOW (principal prefix + port; namespace + ipBlock; HTTP rule dropped)
    P("shop-front", "10.244.1.5", 8080, "allowed by shop/web-allow", id="web-front-8080"),
    P("shop-front", "10.244.1.5", 9090, NONE_ALLOWED, id="web-front-wrong-port"),
    P("ops-deployer", "10.244.1.5", 9090, "allowed by shop/web-allow", id="web-ops-any-port"),
    P("ops-deployer-offnet", "10.244.1.5", 8080, NONE_ALLOWED, id="web-ops-offnet"),
    P("monitoring", "10.244.1.5", 8080, NONE_ALLOWED, id="web-http-rule-dropped"),
    P("legacy-plaintext", "10.244.1.5", 8080, NONE_ALLOWED, id="web-plaintext"),
    P("shop-front", "10.244.1.5", 9999, DENIED_BY + "shop/no-debug-port",
      id="web-namespace-deny-beats-allow"),
    # db: selector DENY on notNamespaces, global DENY on the legacy subnet
    P("shop-front", "10.244.1.6", 5432, "no allow policies", id="db-front"),
    P("ops-deployer", "10.244.1.6", 5432, DENIED_BY + "shop/db-deny-foreign", id="db-ops"),
    P("other-plaintext", "10.244.1.6", 5432, DENIED_BY + "shop/db-deny-foreign",
      id="db-plaintext"),
    P("legacy-plaintext", "10.244.1.6", 5432, DENIED_BY + "istio-system/block-legacy",
      id="db-legacy-global-deny"),
    # vault: workload STRICT
    P("shop-front", "10.244.1.7", 8200, "no allow policies", id="vault-strict-mtls"),
    P("other-plaintext", "10.244.1.7", 8200,
      DENIED_BY + "istio-system/istio_converted_static_strict", id="vault-strict-plaintext"),
    # ops namespace STRICT; legacy namespace PERMISSIVE (no PeerAuthentication)
    P("legacy-plaintext", "10.244.2.5", 8080,
      DENIED_BY + "istio-system/istio_converted_static_strict", id="ops-ns-strict-plaintext"),
    P("monitoring", "10.244.2.5", 8080, "no allow policies", id="ops-ns-strict-mtls"),
    P("other-plaintext", "10.244.3.5", 8080, "no allow policies", id="legacy-permissive"),
    # console: port-level STRICT on 9443; dry-run ALLOW never enforced
    P("other-plaintext", "10.244.1.8", 9443,
      DENIED_BY + "shop/converted_peer_authentication_console-admin", id="console-port-strict"),
    P("other-plaintext", "10.244.1.8", 8080, "no allow policies", id="console-other-port"),
    P("shop-front", "10.244.1.8", 9443, "no allow policies", id="console-port-strict-mtls"),
]


@pytest.mark.parametrize(("caller", "dst", "port", "reason"), MATRIX)
def test_matrix(snapshot: Snapshot, caller: str, dst: str, port: int, reason: str) -> None:
    """The decision for each caller and destination follows from the manifests."""
    identity, src = CALLERS[caller]
    dst_ip = ipaddress.ip_address(dst)
    conn = ConnectionAttributes(
        None if identity is None else SpiffeId.parse(identity), ipaddress.ip_address(src),
        dst_ip, port, snapshot.workloads_by_address[("", dst_ip)])
    decision = evaluate_in(snapshot, conn)
    assert decision.reason == reason
    assert decision.allowed is not (reason.startswith(DENIED_BY) or reason == NONE_ALLOWED)
    assert explain_in(snapshot, conn).decision == decision


@pytest.mark.parametrize(("caller", "outcome"), [
    P("ops-deployer", "dry-run allow policy match", id="dry-run-would-allow"),
    P("shop-front", "dry-run no allow policies match", id="dry-run-would-reject"),
])
def test_dry_run_policy(snapshot: Snapshot, caller: str, outcome: str) -> None:
    """The dry-run annotation reaches the evaluator: observed, never enforced."""
    identity, src = CALLERS[caller]
    assert identity is not None
    dst_ip = ipaddress.ip_address("10.244.1.8")
    conn = ConnectionAttributes(SpiffeId.parse(identity), ipaddress.ip_address(src),
                                dst_ip, 8080, snapshot.workloads_by_address[("", dst_ip)])
    decision = evaluate_in(snapshot, conn)
    assert decision.allowed
    assert [o.outcome.value for o in decision.dry_run] == [outcome]
