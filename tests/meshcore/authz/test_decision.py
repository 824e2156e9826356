"""The decision procedure: DENY before ALLOW, default allow, reasons, dry-run, STRICT mTLS."""

from __future__ import annotations

import pytest

from meshcore.authz import (
    REASON_NO_ALLOW_POLICIES,
    REASON_NOT_ALLOWED,
    ConnectionAttributes,
    Decision,
    DryRunObservation,
    DryRunOutcome,
    InvalidConnectionError,
    evaluate,
)
from meshcore.wds.authorization import Authorization, Scope
from tests.meshcore.authz.builders import (
    ALLOW,
    ALLOW_ALL,
    DENY,
    WEB,
    conn,
    group,
    match,
    plaintext,
    policy,
)

FRONT_ONLY = {"principals": ["cluster.local/ns/shop/sa/front"]}
OPS_ONLY = {"namespaces": ["ops"]}


def allow(name: str, **kw: object) -> Authorization:
    return policy(name, action=ALLOW, **kw)  # type: ignore[arg-type]


def deny(name: str, **kw: object) -> Authorization:
    return policy(name, action=DENY, **kw)  # type: ignore[arg-type]


WOULD_DENY, WOULD_ALLOW, WOULD_NOT = (DryRunOutcome.WOULD_DENY, DryRunOutcome.WOULD_ALLOW,
                                      DryRunOutcome.WOULD_NOT_ALLOW)
P = pytest.param
CASES = [
    P([], Decision(True, REASON_NO_ALLOW_POLICIES), id="no-policies-default-allow"),
    P([deny("d", **OPS_ONLY)], Decision(True, REASON_NO_ALLOW_POLICIES),
      id="non-matching-deny-default-allow"),
    P([deny("d", **FRONT_ONLY)], Decision(False, "explicitly denied by: shop/d", "shop/d", 0),
      id="matching-deny"),
    P([allow("a", **FRONT_ONLY)], Decision(True, "allowed by shop/a", "shop/a", 0),
      id="matching-allow"),
    P([allow("a", **OPS_ONLY)], Decision(False, REASON_NOT_ALLOWED), id="allow-exists-no-match"),
    P([allow("a")], Decision(False, REASON_NOT_ALLOWED), id="allow-with-zero-groups-denies-all"),
    P([deny("d")], Decision(True, REASON_NO_ALLOW_POLICIES), id="deny-with-zero-groups-no-op"),
    P([allow("a", groups=(ALLOW_ALL,)), deny("d", **FRONT_ONLY)],
      Decision(False, "explicitly denied by: shop/d", "shop/d", 0), id="deny-before-allow"),
    P([allow("a", **OPS_ONLY), allow("b", **FRONT_ONLY)],
      Decision(True, "allowed by shop/b", "shop/b", 0), id="any-allow-suffices"),
    P([deny("d1", **FRONT_ONLY), deny("d2", **FRONT_ONLY)],
      Decision(False, "explicitly denied by: shop/d1", "shop/d1", 0), id="first-deny-reported"),
    P([allow("a", groups=(group((match(**OPS_ONLY),)), group((match(**FRONT_ONLY),))))],
      Decision(True, "allowed by shop/a", "shop/a", 1), id="group-index-reported"),
    # dry-run
    P([deny("dd", dry_run=True, **FRONT_ONLY)],
      Decision(True, REASON_NO_ALLOW_POLICIES, dry_run=(
          DryRunObservation(WOULD_DENY, "shop/dd", 0),)), id="dry-run-deny-only-logs"),
    P([deny("dd", dry_run=True, **OPS_ONLY)], Decision(True, REASON_NO_ALLOW_POLICIES),
      id="dry-run-deny-no-match-silent"),
    P([deny("d", **FRONT_ONLY), deny("dd", dry_run=True, **FRONT_ONLY)],
      Decision(False, "explicitly denied by: shop/d", "shop/d", 0, dry_run=(
          DryRunObservation(WOULD_DENY, "shop/dd", 0),)), id="dry-run-deny-seen-before-deny"),
    P([deny("d", **FRONT_ONLY), allow("da", dry_run=True, **FRONT_ONLY)],
      Decision(False, "explicitly denied by: shop/d", "shop/d", 0),
      id="dry-run-allow-not-reached-after-deny"),
    P([allow("da", dry_run=True, **OPS_ONLY)],
      Decision(True, REASON_NO_ALLOW_POLICIES, dry_run=(DryRunObservation(WOULD_NOT),)),
      id="dry-run-allow-would-reject"),
    P([allow("da", dry_run=True, **FRONT_ONLY)],
      Decision(True, REASON_NO_ALLOW_POLICIES, dry_run=(
          DryRunObservation(WOULD_ALLOW, "shop/da", 0),)), id="dry-run-allow-would-allow"),
    P([allow("a", **OPS_ONLY), allow("da", dry_run=True, **FRONT_ONLY)],
      Decision(False, REASON_NOT_ALLOWED, dry_run=(
          DryRunObservation(WOULD_ALLOW, "shop/da", 0),)), id="dry-run-allow-with-real-allow"),
    P([allow("a", **FRONT_ONLY), allow("da", dry_run=True, **OPS_ONLY)],
      Decision(True, "allowed by shop/a", "shop/a", 0),
      id="dry-run-allow-miss-with-real-allow-silent"),
]


@pytest.mark.parametrize(("policies", "expected"), CASES)
def test_decision(policies: list[Authorization], expected: Decision) -> None:
    """The decision, deciding policy, group and dry-run observations are ztunnel's."""
    assert evaluate(conn(), policies) == expected


def test_rejection_error_is_ztunnels_access_log_text() -> None:
    """Denied decisions carry the access log `error` text ztunnel writes; allowed ones none."""
    denied = evaluate(conn(), [allow("a", **OPS_ONLY)])
    assert denied.rejection_error == (
        "connection closed due to policy rejection: allow policies exist, but none allowed")
    explicit = evaluate(conn(), [deny("d", **FRONT_ONLY)])
    assert explicit.rejection_error == (
        "connection closed due to policy rejection: explicitly denied by: shop/d")
    assert evaluate(conn(), []).rejection_error is None
    assert str(explicit) == "DENY: explicitly denied by: shop/d (group 0)"


# STRICT PeerAuthentication arrives as istiod's static DENY `not_principals: [presence]`.
STRICT = policy("istio_converted_static_strict", "istio-system", action=DENY,
                scope=Scope.WORKLOAD_SELECTOR, not_principals=["*"])
# Port-level STRICT on 9443 only (converted_peer_authentication_<name>).
STRICT_9443 = policy("converted_peer_authentication_admin", action=DENY,
                     scope=Scope.WORKLOAD_SELECTOR, not_principals=["*"],
                     destination_ports=[9443])


@pytest.mark.parametrize(("policies", "connection", "allowed"), [
    P([STRICT], plaintext(), False, id="strict-plaintext-denied"),
    P([STRICT], conn(), True, id="strict-hbone-allowed"),
    P([], plaintext(), True, id="permissive-plaintext-allowed"),
    P([STRICT_9443], plaintext(port=9443), False, id="port-strict-plaintext-on-port-denied"),
    P([STRICT_9443], plaintext(port=8080), True, id="port-strict-plaintext-other-port-ok"),
    P([STRICT_9443], conn(port=9443), True, id="port-strict-hbone-on-port-ok"),
    P([STRICT, allow("a", groups=(ALLOW_ALL,))], plaintext(), False,
      id="strict-beats-allow-all"),
])
def test_peer_authentication(policies: list[Authorization], connection: ConnectionAttributes,
                             allowed: bool) -> None:
    """STRICT denies plaintext (no identity) and lets HBONE (identity) through."""
    decision = evaluate(connection, policies)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason.startswith("explicitly denied by: ")


@pytest.mark.parametrize(("field", "kwargs"), [
    P("destination_port", {"port": 0}, id="port-zero"),
    P("destination_port", {"port": 65536}, id="port-too-big"),
])
def test_invalid_connection(field: str, kwargs: dict[str, int]) -> None:
    """Impossible connection attributes are rejected with the field named."""
    with pytest.raises(InvalidConnectionError) as info:
        conn(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "proxy bug" in str(info.value)


def test_invalid_ip_type() -> None:
    """An IP given as a string is a caller bug, reported as such."""
    with pytest.raises(InvalidConnectionError, match="source_ip"):
        ConnectionAttributes(None, "10.0.0.1", conn().destination_ip, 80, WEB)  # type: ignore[arg-type]
