"""Which policies apply to a destination (scopes), through the real wds Store and lookup."""

from __future__ import annotations

import ipaddress

import betterproto.lib.google.protobuf as pbe
import pytest

from meshcore.authz import ConnectionAttributes, evaluate_in, explain_in, unknown_policies
from meshcore.identity import SpiffeId
from meshcore.protos.istio import security as sec
from meshcore.protos.istio import workload as wl
from meshcore.wds import Snapshot, Store, policies_for
from meshcore.wds.store import to_update
from meshcore.xds.types import TYPE_ADDRESS, TYPE_AUTHORIZATION

G, NS, SEL = sec.Scope.GLOBAL, sec.Scope.NAMESPACE, sec.Scope.WORKLOAD_SELECTOR


def deny_all(name: str, namespace: str, scope: sec.Scope) -> sec.Authorization:
    """A DENY matching every connection (one group without rules)."""
    return sec.Authorization(name=name, namespace=namespace, scope=scope,
                             action=sec.Action.DENY, groups=[sec.Group()])


def pod(name: str, namespace: str, ip: str, policies: list[str]) -> wl.Address:
    return wl.Address(workload=wl.Workload(
        uid=f"Kubernetes//Pod/{namespace}/{name}", name=name, namespace=namespace,
        addresses=[ipaddress.ip_address(ip).packed], service_account=name,
        tunnel_protocol=wl.TunnelProtocol.HBONE, authorization_policies=policies))


def snapshot(policies: list[sec.Authorization], workload_policies: list[str]) -> Snapshot:
    store = Store()
    store.apply(TYPE_ADDRESS, [to_update(a.workload.uid, a) for a in [
        pod("web-1", "shop", "10.244.1.5", workload_policies)]])
    store.apply(TYPE_AUTHORIZATION,
                [to_update(f"{p.namespace}/{p.name}", p) for p in policies])
    return store.snapshot


def connect(snap: Snapshot, identity: str | None = None) -> ConnectionAttributes:
    dst = ipaddress.ip_address("10.244.1.5")
    return ConnectionAttributes(
        None if identity is None else SpiffeId.parse(identity),
        ipaddress.ip_address("10.0.0.9"), dst, 8080, snap.workloads_by_address[("", dst)])


P = pytest.param


@pytest.mark.parametrize(("policy", "named", "applies"), [
    P(deny_all("mesh", "istio-system", G), [], True, id="global-applies-everywhere"),
    P(deny_all("ns", "shop", NS), [], True, id="namespace-of-workload-applies"),
    P(deny_all("ns", "ops", NS), [], False, id="other-namespace-does-not-apply"),
    P(deny_all("sel", "shop", SEL), ["shop/sel"], True, id="selector-named-applies"),
    P(deny_all("sel", "shop", SEL), [], False, id="selector-not-named-does-not-apply"),
    P(deny_all("sel", "istio-system", SEL), ["istio-system/sel"], True,
      id="root-selector-named-applies"),
    P(deny_all("ns", "ops", NS), ["ops/ns"], True, id="named-other-namespace-policy-applies"),
])
def test_scope(policy: sec.Authorization, named: list[str], applies: bool) -> None:
    """A DENY-all denies the workload exactly when its scope selects it (§7.1)."""
    snap = snapshot([policy], named)
    decision = evaluate_in(snap, connect(snap))
    assert decision.allowed is not applies
    explanation = explain_in(snap, connect(snap))
    assert [p.key for p in explanation.policies] == ([policy.namespace + "/" + policy.name]
                                                     if applies else [])


def test_unknown_names_skipped_and_reported() -> None:
    """A name the workload lists but the proxy never received is skipped, and explain says so."""
    snap = snapshot([deny_all("ns", "shop", NS)], ["shop/missing"])
    assert unknown_policies(snap, connect(snap).destination) == ("shop/missing",)
    assert [p.key for p in policies_for(snap, connect(snap).destination)] == ["shop/ns"]
    explanation = explain_in(snap, connect(snap))
    assert explanation.unknown == ("shop/missing",)
    assert "shop/missing (named by the workload, not received; skipped)" in explanation.render()


def test_policy_selected_twice_counts_once() -> None:
    """A namespace policy that the workload also names is considered once."""
    snap = snapshot([deny_all("ns", "shop", NS)], ["shop/ns"])
    assert [p.key for p in policies_for(snap, connect(snap).destination)] == ["shop/ns"]


def test_strict_static_policy_through_store() -> None:
    """istiod's static STRICT policy, as protobuf, denies plaintext and allows mTLS peers."""
    strict = sec.Authorization(
        name="istio_converted_static_strict", namespace="istio-system", scope=SEL,
        action=sec.Action.DENY, groups=[sec.Group(rules=[sec.Rules(matches=[
            sec.Match(not_principals=[sec.StringMatch(presence=pbe.Empty())])])])])
    snap = snapshot([strict], ["istio-system/istio_converted_static_strict"])
    assert not evaluate_in(snap, connect(snap)).allowed
    assert evaluate_in(snap, connect(snap, "spiffe://cluster.local/ns/a/sa/b")).allowed
