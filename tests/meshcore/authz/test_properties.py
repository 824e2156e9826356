"""Hypothesis properties of the evaluator over random policies and connections.

Values come from small pools so that random policies hit random connections often.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from meshcore.authz import (
    REASON_NO_ALLOW_POLICIES,
    ConnectionAttributes,
    evaluate,
    explain,
    match_policy,
)
from meshcore.identity import SpiffeId
from meshcore.wds.authorization import (
    Action,
    Authorization,
    Group,
    Match,
    Rules,
    Scope,
    StringMatch,
    StringMatchKind,
)
from tests.meshcore.authz.builders import WEB, cidr, sa

IDENTITIES = [None, SpiffeId("cluster.local", "shop", "front"),
              SpiffeId("cluster.local", "ops", "deployer"), SpiffeId("td", "shop", "back")]
IPS = ["10.0.0.9", "10.0.1.7", "10.244.1.5", "fd00::9", "fd00:1::5"]
PORTS = [80, 8080, 9443]
STRINGS = ["shop", "ops", "sh", "op", "cluster.local/ns/shop/sa/front", "td/", "/sa/back", ""]
CIDRS = ["10.0.0.0/24", "10.0.0.9/32", "10.244.0.0/16", "0.0.0.0/0", "fd00::/64", "::/0"]
ACCOUNTS = ["shop/front", "ops/deployer", "shop/back", "ops/front"]

string_matches = st.one_of(
    st.just(StringMatch(StringMatchKind.PRESENCE)),
    st.builds(StringMatch, st.sampled_from(
        [StringMatchKind.EXACT, StringMatchKind.PREFIX, StringMatchKind.SUFFIX]),
        st.sampled_from(STRINGS)),
)


POOLS = {"namespaces": string_matches, "principals": string_matches,
         "source_ips": st.sampled_from(CIDRS).map(cidr),
         "destination_ips": st.sampled_from(CIDRS).map(cidr),
         "destination_ports": st.sampled_from(PORTS),
         "service_accounts": st.sampled_from(ACCOUNTS).map(sa)}
FIELD_NAMES = [f.name for f in dataclasses.fields(Match)]


def pool(field: str) -> st.SearchStrategy:  # type: ignore[type-arg]
    return POOLS[field.removeprefix("not_")]


@st.composite
def matches(draw: st.DrawFn, max_fields: int = 2) -> Match:
    """A Match with a few fields set (sparse, so random connections often match)."""
    names = draw(st.sets(st.sampled_from(FIELD_NAMES), max_size=max_fields))
    return Match(**{n: tuple(draw(st.lists(pool(n), min_size=1, max_size=2))) for n in names})


groups = st.builds(Group, st.lists(st.builds(Rules, st.lists(matches(), max_size=3)
                                             .map(tuple)), max_size=2).map(tuple))


@st.composite
def policy_lists(draw: st.DrawFn, max_size: int = 4) -> list[Authorization]:
    n = draw(st.integers(0, max_size))
    return [Authorization(
        name=f"p{i}", namespace=draw(st.sampled_from(["shop", "istio-system"])),
        scope=draw(st.sampled_from(list(Scope))), action=draw(st.sampled_from(list(Action))),
        groups=tuple(draw(st.lists(groups, max_size=3))), dry_run=draw(st.booleans()),
    ) for i in range(n)]


connections = st.builds(
    lambda ident, src, dst, port: ConnectionAttributes(
        ident, ipaddress.ip_address(src), ipaddress.ip_address(dst), port, WEB),
    st.sampled_from(IDENTITIES), st.sampled_from(IPS), st.sampled_from(IPS),
    st.sampled_from(PORTS))


def enforced(policies: list[Authorization], action: Action) -> list[Authorization]:
    return [p for p in policies if p.action is action and not p.dry_run]


@given(connections, policy_lists())
def test_explain_agrees_with_evaluate(conn: ConnectionAttributes,
                                      policies: list[Authorization]) -> None:
    """explain's decision is evaluate's, and its traces agree with the untraced matcher."""
    exp = explain(conn, policies)
    assert exp.decision == evaluate(conn, policies)
    assert sorted(p.key for p in exp.policies) == sorted(p.key for p in policies)
    for pe in exp.policies:
        assert pe.matched_group == match_policy(pe.policy, conn)


@given(connections, policy_lists(), policy_lists(max_size=1), st.integers(0, 5))
def test_non_matching_deny_changes_nothing(conn: ConnectionAttributes,
                                           policies: list[Authorization],
                                           extra: list[Authorization], where: int) -> None:
    """Inserting an enforced DENY that does not match never changes the decision."""
    if not extra:
        return
    deny = dataclasses.replace(extra[0], name="extra", action=Action.DENY, dry_run=False)
    if match_policy(deny, conn) is not None:
        return
    bigger = [*policies[:where], deny, *policies[where:]]
    assert evaluate(conn, bigger) == evaluate(conn, policies)


@given(connections, policy_lists())
def test_matching_deny_always_denies(conn: ConnectionAttributes,
                                     policies: list[Authorization]) -> None:
    """Adding an enforced DENY that matches everything always rejects."""
    deny = Authorization("deny-all", "shop", Scope.NAMESPACE, Action.DENY, (Group(),))
    decision = evaluate(conn, [*policies, deny])
    assert not decision.allowed
    assert decision.reason.startswith("explicitly denied by: ")


@given(connections, policy_lists())
def test_default_allow(conn: ConnectionAttributes, policies: list[Authorization]) -> None:
    """With no enforced ALLOW and no matching enforced DENY, the connection is allowed."""
    if enforced(policies, Action.ALLOW):
        return
    if any(match_policy(p, conn) is not None for p in enforced(policies, Action.DENY)):
        return
    decision = evaluate(conn, policies)
    assert decision.allowed
    assert decision.reason == REASON_NO_ALLOW_POLICIES
    assert decision.policy is None


@given(connections, policy_lists())
def test_allowed_iff_spec(conn: ConnectionAttributes, policies: list[Authorization]) -> None:
    """allowed = no enforced DENY matches and (no enforced ALLOW, or one matches)."""
    deny_hit = any(match_policy(p, conn) is not None for p in enforced(policies, Action.DENY))
    allows = enforced(policies, Action.ALLOW)
    allow_ok = not allows or any(match_policy(p, conn) is not None for p in allows)
    assert evaluate(conn, policies).allowed is (not deny_hit and allow_ok)


@given(connections, policy_lists(), st.randoms(use_true_random=False))
def test_order_never_changes_outcome(conn: ConnectionAttributes, policies: list[Authorization],
                                     rnd: object) -> None:
    """Shuffling the policies may change which policy is named, never whether it is allowed."""
    shuffled = list(policies)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert evaluate(conn, shuffled).allowed is evaluate(conn, policies).allowed


@given(connections, policy_lists())
def test_dry_run_only_observes(conn: ConnectionAttributes, policies: list[Authorization]) -> None:
    """Dropping the dry-run policies changes only the dry-run observations."""
    full = evaluate(conn, policies)
    bare = evaluate(conn, [p for p in policies if not p.dry_run])
    assert bare.dry_run == ()
    assert dataclasses.replace(full, dry_run=()) == bare


@given(connections, policy_lists())
def test_strict_denies_plaintext_only(conn: ConnectionAttributes,
                                      policies: list[Authorization]) -> None:
    """Adding the STRICT policy denies every plaintext connection and changes nothing for mTLS."""
    strict = Authorization("istio_converted_static_strict", "istio-system",
                           Scope.WORKLOAD_SELECTOR, Action.DENY, (Group((Rules((
                               Match(not_principals=(StringMatch(StringMatchKind.PRESENCE),)),
                           )),)),))
    with_strict = evaluate(conn, [*policies, strict])
    if conn.source_identity is None:
        assert not with_strict.allowed
    else:
        assert with_strict == evaluate(conn, policies)


@given(connections, matches(max_fields=4), st.sampled_from(FIELD_NAMES), st.data())
def test_match_is_monotone(conn: ConnectionAttributes, m: Match, field: str,
                           data: st.DataObject) -> None:
    """More values in a non-empty positive field never unmatch; more in a `not_` field of a
    non-empty Match never match. (The first value is different: an empty positive list means
    "anything" and an empty Match is skipped.)"""
    grown = dataclasses.replace(m, **{field: (*getattr(m, field), data.draw(pool(field)))})

    def hit(x: Match) -> bool:
        return match_policy(Authorization("p", "shop", Scope.NAMESPACE, Action.ALLOW,
                                          (Group((Rules((x,)),)),)), conn) is not None

    if field.startswith("not_"):
        assert m.is_empty or not hit(grown) or hit(m)
    else:
        assert not getattr(m, field) or hit(grown) or not hit(m)
