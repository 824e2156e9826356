"""`explain`: same decision as `evaluate`, plus why each policy and group matched or not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshcore.authz import ConnectionAttributes, evaluate, explain
from meshcore.wds.authorization import Authorization, Scope
from tests.meshcore.authz.builders import (
    ALLOW_ALL,
    DENY,
    conn,
    group,
    match,
    plaintext,
    policy,
    workload,
)

STRICT = policy("istio_converted_static_strict", "istio-system", action=DENY,
                scope=Scope.WORKLOAD_SELECTOR, not_principals=["*"])
MESH_DRY = policy("allow-all", "istio-system", scope=Scope.GLOBAL, groups=(ALLOW_ALL,),
                  dry_run=True)
WEB_L4 = policy("web-l4", scope=Scope.WORKLOAD_SELECTOR, groups=(
    group((match(destination_ports=[8080, 8443]),),
          (match(principals=["cluster.local/ns/ops/*"]), match(namespaces=["monitoring"]))),
    group((match(source_ips=["10.1.0.0/16"], not_source_ips=["10.0.0.0/8"]),)),
))
NOBODY = policy("allow-nothing")
LEGACY = policy("deny-legacy", action=DENY, not_namespaces=["shop", "istio-*"])
POLICIES = [STRICT, MESH_DRY, WEB_L4, NOBODY, LEGACY]
WEB = workload(policies=("istio-system/istio_converted_static_strict", "shop/web-l4"))
OPS = "spiffe://cluster.local/ns/ops/sa/deployer"

P = pytest.param
CONNECTIONS = [
    P(conn(destination=WEB), id="shop-front"),
    P(plaintext(destination=WEB), id="plaintext"),
    P(conn(OPS, destination=WEB), id="ops-deployer"),
    P(conn(OPS, destination=WEB, port=9000), id="ops-other-port"),
    P(conn("spiffe://cluster.local/ns/monitoring/sa/prom", destination=WEB), id="monitoring"),
]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_explain_decision_is_evaluate(connection: ConnectionAttributes) -> None:
    """The explanation's decision is exactly evaluate's, and its match results agree."""
    exp = explain(connection, POLICIES)
    assert exp.decision == evaluate(connection, POLICIES)
    for pe in exp.policies:
        assert pe.matched_group == next((g.index for g in pe.groups if g.matched), None)
        assert len(pe.misses) == sum(not g.matched for g in pe.groups)


def test_evaluation_order_and_reached() -> None:
    """Policies are listed in evaluation order; those after the decision are not reached."""
    exp = explain(plaintext(destination=WEB), POLICIES)
    assert [(p.key, p.reached, p.matched_group) for p in exp.policies] == [
        ("istio-system/istio_converted_static_strict", True, 0),
        ("shop/deny-legacy", False, 0),
        ("istio-system/allow-all", False, 0),
        ("shop/web-l4", False, None),
        ("shop/allow-nothing", False, None),
    ]


RENDERED_PLAINTEXT = """\
connection: 10.0.0.9 (no peer identity) -> shop/web-1 10.244.1.5:8080
decision:   DENY: explicitly denied by: istio-system/istio_converted_static_strict (group 0)
policies:   5 (evaluation order: dry-run DENY, DENY, dry-run ALLOW, ALLOW)
  DENY            istio-system/istio_converted_static_strict  [selector (listed by the workload)]  \
MATCHED group 0  <- decided
  DENY            shop/deny-legacy  [namespace-wide (shop)]  MATCHED group 0  (not reached)
  dry-run ALLOW   istio-system/allow-all  [mesh-wide (root namespace, no selector)]  \
MATCHED group 0  (not reached)
  ALLOW           shop/web-l4  [selector (listed by the workload)]  no match  (not reached)
      group 0: rules[1] failed:
        matches[0]: principal (no peer identity) not in principals ["cluster.local/ns/ops/*"]
        matches[1]: namespace (no peer identity) not in namespaces ["monitoring"]
      group 1: rules[0] failed: matches[0]: source IP 10.0.0.9 not in source_ips [10.1.0.0/16]
  ALLOW           shop/allow-nothing  [namespace-wide (shop)]  no match  (not reached)
      no groups: a policy without rules matches nothing"""

RENDERED_FRONT = """\
connection: 10.0.0.9 spiffe://cluster.local/ns/shop/sa/front -> shop/web-1 10.244.1.5:8080
decision:   DENY: allow policies exist, but none allowed
dry-run:    dry-run allow policy match: istio-system/allow-all (group 0)
policies:   5 (evaluation order: dry-run DENY, DENY, dry-run ALLOW, ALLOW)
  DENY            istio-system/istio_converted_static_strict  [selector (listed by the workload)]  \
no match
      group 0: rules[0] failed: matches[0]: principal "cluster.local/ns/shop/sa/front" hits \
not_principals "*"
  DENY            shop/deny-legacy  [namespace-wide (shop)]  no match
      group 0: rules[0] failed: matches[0]: namespace "shop" hits not_namespaces "shop"
  dry-run ALLOW   istio-system/allow-all  [mesh-wide (root namespace, no selector)]  \
MATCHED group 0
  ALLOW           shop/web-l4  [selector (listed by the workload)]  no match
      group 0: rules[1] failed:
        matches[0]: principal "cluster.local/ns/shop/sa/front" not in principals \
["cluster.local/ns/ops/*"]
        matches[1]: namespace "shop" not in namespaces ["monitoring"]
      group 1: rules[0] failed: matches[0]: source IP 10.0.0.9 not in source_ips [10.1.0.0/16]
  ALLOW           shop/allow-nothing  [namespace-wide (shop)]  no match
      no groups: a policy without rules matches nothing"""


@pytest.mark.parametrize(("connection", "text"), [
    P(plaintext(destination=WEB), RENDERED_PLAINTEXT, id="plaintext-strict"),
    P(conn(destination=WEB), RENDERED_FRONT, id="identity-not-allowed"),
])
def test_render(connection: ConnectionAttributes, text: str) -> None:
    """The `ambientctl why` text (the examples in docs/authorization.md) is stable."""
    assert explain(connection, POLICIES).render() == text


def test_render_without_policies() -> None:
    """With nothing selected, the text says so and the default allow decides."""
    assert explain(conn(), []).render().splitlines()[1:] == [
        "decision:   ALLOW: no allow policies", "policies:   none apply"]


FRONT_DETAILS = [
    P({"destination_ips": ["10.9.0.0/16"]},
      "destination IP 10.244.1.5 not in destination_ips [10.9.0.0/16]", id="destination_ips"),
    P({"not_destination_ips": ["10.244.0.0/16", "10.0.0.0/8", "fd00::/8"]},
      "destination IP 10.244.1.5 hits not_destination_ips 10.244.0.0/16, 10.0.0.0/8",
      id="not_destination_ips"),
    P({"source_ips": ["fd00::/8"]}, "source IP 10.0.0.9 not in source_ips [fd00::/8]",
      id="source_ips"),
    P({"not_source_ips": ["10.0.0.9/32"]}, "source IP 10.0.0.9 hits not_source_ips 10.0.0.9/32",
      id="not_source_ips"),
    P({"destination_ports": [80, 443]}, "destination port 8080 not in destination_ports [80, 443]",
      id="destination_ports"),
    P({"not_destination_ports": [8080]},
      "destination port 8080 hits not_destination_ports 8080", id="not_destination_ports"),
    P({"service_accounts": ["shop/back"]},
      'service account "shop/front" not in service_accounts ["shop/back"]',
      id="service_accounts"),
    P({"not_service_accounts": ["shop/front"]},
      'service account "shop/front" hits not_service_accounts "shop/front"',
      id="not_service_accounts"),
    P({"principals": ["*/sa/back", "spiffe://*"]},
      'principal "cluster.local/ns/shop/sa/front" not in principals ["*/sa/back", "spiffe://*"]',
      id="principals"),
    P({"not_principals": ["cluster.local/*", "*/front", "x"]},
      'principal "cluster.local/ns/shop/sa/front" hits not_principals "cluster.local/*", '
      '"*/front"', id="not_principals"),
    P({"namespaces": ["ops"]}, 'namespace "shop" not in namespaces ["ops"]', id="namespaces"),
    P({"not_namespaces": ["*"]}, 'namespace "shop" hits not_namespaces "*"',
      id="not_namespaces"),
    P({"principals": ["*"], "destination_ports": [1]},
      "destination port 8080 not in destination_ports [1]", id="first-field-in-ztunnel-order"),
]


@pytest.mark.parametrize(("fields", "detail"), FRONT_DETAILS)
def test_first_failing_field(fields: dict[str, Any], detail: str) -> None:
    """A miss names the first failing field, the connection's value and the values involved."""
    exp = explain(conn(), [policy(**fields)])
    (pe,) = exp.policies
    assert [m.details for m in pe.misses] == [(f"matches[0]: {detail}",)]
    assert pe.misses[0].rules == 0


def test_rules_with_only_empty_matches() -> None:
    """A clause made only of empty Matches is reported as matching nothing."""
    pe = explain(conn(), [policy(groups=(ALLOW_ALL, group((match(),))))]).policies[0]
    assert pe.matched_group == 0
    assert [str(m) for m in pe.misses] == [
        "group 1: rules[0] failed: every match is empty (skipped), so it matches nothing"]


def test_policy_not_selecting_destination() -> None:
    """A policy handed in that does not select the destination is flagged as such."""
    other = policy("ops-only", "ops", groups=(ALLOW_ALL,))
    exp = explain(conn(), [other])
    assert exp.policies[0].selected_by is None
    assert "[NAMESPACE, does not select this workload]" in exp.render()


def test_to_dict_is_json() -> None:
    """The --json form carries the decision and every policy, and serializes."""
    d = explain(conn(destination=WEB), POLICIES).to_dict()
    json.dumps(d)
    assert d["decision"] == {
        "allowed": False, "reason": "allow policies exist, but none allowed", "policy": None,
        "group": None, "dry_run": [{"outcome": "dry-run allow policy match",
                                    "policy": "istio-system/allow-all", "group": 0}]}
    assert d["connection"]["source_identity"] == "spiffe://cluster.local/ns/shop/sa/front"
    assert [p["policy"] for p in d["policies"]] == [
        "istio-system/istio_converted_static_strict", "shop/deny-legacy",
        "istio-system/allow-all", "shop/web-l4", "shop/allow-nothing"]
    assert d["policies"][3]["why_not"][1] == (
        "group 1: rules[0] failed: matches[0]: source IP 10.0.0.9 not in source_ips "
        "[10.1.0.0/16]")


def test_duplicate_policy_objects() -> None:
    """The same policy passed twice is explained twice and decides once."""
    deny_front = policy("d", action=DENY, principals=["*"])
    pols: list[Authorization] = [deny_front, deny_front]
    exp = explain(conn(), pols)
    assert exp.decision == evaluate(conn(), pols)
    assert [p.key for p in exp.policies] == ["shop/d", "shop/d"]
