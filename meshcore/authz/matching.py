"""Does a policy match a connection? ztunnel's `Authorization::matches`, with an optional trace.

Called by `meshcore.authz.decision` (the only place decisions are made) for every policy it
needs, with `trace=None` on the hot path and with a list when `explain` records. Hands back
the index of the first matching group (or None) and, when tracing, one `GroupTrace` per group.

Semantics (AMBIENT-INTERNALS §7.1; ztunnel `src/rbac.rs`):
* a policy with zero groups never matches; groups are OR-ed (first match wins);
* a group matches when every `Rules` in it matches; a group with no Rules matches everything;
* a `Rules` with no Matches matches everything; otherwise it matches when any *non-empty*
  Match matches (empty Matches are skipped, so a Rules of only empty Matches matches nothing);
* a Match checks its field pairs in ztunnel's order (`FIELDS`): destination IPs, source IPs,
  destination ports, service accounts, principals, namespaces. Each pair requires (positive
  list empty OR some value hits) AND (negative list empty OR no value hits).
* attribute sources: principals compare against the identity without `spiffe://` and never hit
  without an identity (not even `presence` or an empty prefix: ztunnel fails the predicate
  when the `spiffe://` prefix is absent); namespaces compare against the identity's namespace,
  "" without one (so `presence` fails there, exactly as in ztunnel); service accounts never hit
  without an identity and ignore the trust domain.

Tracing changes how much is evaluated (everything, for the explanation), never the answer:
the returned group index is the first matching one either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from meshcore.authz.attributes import ConnectionAttributes
from meshcore.wds.authorization import (
    Authorization,
    Cidr,
    Group,
    Match,
    Rules,
    ServiceAccountMatch,
    StringMatch,
)


def _destination_ip(value: Cidr, conn: ConnectionAttributes) -> bool:
    return value.contains(conn.destination_ip)


def _source_ip(value: Cidr, conn: ConnectionAttributes) -> bool:
    return value.contains(conn.source_ip)


def _destination_port(value: int, conn: ConnectionAttributes) -> bool:
    return value == conn.destination_port


def _service_account(value: ServiceAccountMatch, conn: ConnectionAttributes) -> bool:
    ident = conn.source_identity
    return (
        ident is not None
        and ident.namespace == value.namespace
        and ident.service_account == value.service_account
    )


def _principal(value: StringMatch, conn: ConnectionAttributes) -> bool:
    principal = conn.principal
    return principal is not None and value.matches(principal)


def _namespace(value: StringMatch, conn: ConnectionAttributes) -> bool:
    return value.matches(conn.source_namespace)


Predicate = Callable[[Any, ConnectionAttributes], bool]

# (positive field, negative field, predicate), in the order ztunnel evaluates them.
FIELDS: tuple[tuple[str, str, Predicate], ...] = (
    ("destination_ips", "not_destination_ips", _destination_ip),
    ("source_ips", "not_source_ips", _source_ip),
    ("destination_ports", "not_destination_ports", _destination_port),
    ("service_accounts", "not_service_accounts", _service_account),
    ("principals", "not_principals", _principal),
    ("namespaces", "not_namespaces", _namespace),
)
PREDICATES: dict[str, Predicate] = {
    name: pred for pos, neg, pred in FIELDS for name in (pos, neg)
}


def hits(match: Match, field: str, conn: ConnectionAttributes) -> tuple[Any, ...]:
    """The values of `match.<field>` that the connection hits (for explanations)."""
    pred = PREDICATES[field]
    return tuple(v for v in getattr(match, field) if pred(v, conn))


def failing_field(match: Match, conn: ConnectionAttributes) -> str | None:
    """None when the (non-empty) `match` matches; else the first field that fails it.

    A positive field fails when it is non-empty and nothing hits; a negative (`not_*`) field
    fails when something hits.
    """
    for pos, neg, pred in FIELDS:
        positive = getattr(match, pos)
        if positive and not any(pred(v, conn) for v in positive):
            return pos
        negative = getattr(match, neg)
        if negative and any(pred(v, conn) for v in negative):
            return neg
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class MatchTrace:
    """One Match of a Rules: skipped (empty), matched, or the first field that failed."""

    index: int
    empty: bool
    failed_field: str | None

    @property
    def matched(self) -> bool:
        return not self.empty and self.failed_field is None


@dataclasses.dataclass(frozen=True, slots=True)
class RulesTrace:
    """One Rules clause of a group (its Matches OR-ed)."""

    index: int
    matched: bool
    matches: tuple[MatchTrace, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupTrace:
    """One group (rule) of a policy (its Rules AND-ed)."""

    index: int
    matched: bool
    rules: tuple[RulesTrace, ...]

    @property
    def first_failed_rules(self) -> RulesTrace | None:
        return next((r for r in self.rules if not r.matched), None)


def _match_rules(rules: Rules, index: int, conn: ConnectionAttributes,
                 trace: list[RulesTrace] | None) -> bool:
    matched = not rules.matches
    steps: list[MatchTrace] = []
    for i, m in enumerate(rules.matches):
        if m.is_empty:
            steps.append(MatchTrace(i, True, None))
            continue
        failed = failing_field(m, conn)
        steps.append(MatchTrace(i, False, failed))
        if failed is None:
            matched = True
            if trace is None:
                break
    if trace is not None:
        trace.append(RulesTrace(index, matched, tuple(steps)))
    return matched


def _match_group(group: Group, index: int, conn: ConnectionAttributes,
                 trace: list[GroupTrace] | None) -> bool:
    steps: list[RulesTrace] | None = None if trace is None else []
    matched = True
    for i, rules in enumerate(group.rules):
        if not _match_rules(rules, i, conn, steps):
            matched = False
            if steps is None:
                break
    if trace is not None and steps is not None:
        trace.append(GroupTrace(index, matched, tuple(steps)))
    return matched


def match_policy(policy: Authorization, conn: ConnectionAttributes,
                 trace: list[GroupTrace] | None = None) -> int | None:
    """Index of the first group of `policy` that matches `conn`, or None.

    With `trace`, every group, Rules and Match is evaluated and recorded in it (in order);
    without, evaluation stops as early as ztunnel's does. The result is the same.
    """
    first: int | None = None
    for i, group in enumerate(policy.groups):
        if _match_group(group, i, conn, trace) and first is None:
            first = i
            if trace is None:
                break
    return first
