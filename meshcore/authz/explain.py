"""`explain(conn, policies) -> Explanation`: the decision plus why each policy did or did not match.

Called by `ambientctl why SRC DST:PORT` (render() for people, to_dict() for --json) and by
ztunnel's debug logging. It is `evaluate` with a recorder: the Decision comes from the same
`decide` call, whose matcher here records a full trace of every policy it evaluates. Policies
that ztunnel would not have reached (a DENY decided earlier) are then traced too, marked
`reached=False`, so the listing is complete. Pure; no I/O.

What an explanation says per policy: action, scope, why it applies to the destination
(`selected_by`), the first matching group, and for each group that did not match, the first
Rules clause that failed and, for each non-empty Match in it, the first field that failed
(ztunnel's field order) with the connection's value and the policy values involved. Values are
written in AuthorizationPolicy notation: `*` presence, `x*` prefix, `*x` suffix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from meshcore.authz.attributes import NO_IDENTITY, ConnectionAttributes
from meshcore.authz.decision import Decision, decide, partition
from meshcore.authz.matching import GroupTrace, hits, match_policy
from meshcore.wds.authorization import (
    Authorization,
    Cidr,
    Match,
    Scope,
    ServiceAccountMatch,
    StringMatch,
    StringMatchKind,
)
from meshcore.wds.workload import Workload

NO_GROUPS = "no groups: a policy without rules matches nothing"


@dataclasses.dataclass(frozen=True, slots=True)
class GroupMiss:
    """Why one group did not match: its first failing Rules and, per non-empty Match in it,
    the first failing field (`details`; empty when every Match there is empty)."""

    group: int
    rules: int
    details: tuple[str, ...]

    def __str__(self) -> str:
        detail = "; ".join(self.details) or (
            "every match is empty (skipped), so it matches nothing")
        return f"group {self.group}: rules[{self.rules}] failed: {detail}"


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyExplanation:
    """One considered policy and how it fared against the connection."""

    policy: Authorization
    selected_by: str | None  # None: the policy does not select this destination
    reached: bool  # False: ztunnel decided before evaluating it
    matched_group: int | None
    groups: tuple[GroupTrace, ...]
    misses: tuple[GroupMiss, ...]  # one per group that did not match

    @property
    def key(self) -> str:
        return self.policy.key

    @property
    def matched(self) -> bool:
        return self.matched_group is not None

    @property
    def why_not(self) -> tuple[str, ...]:
        """One line per group that did not match; a line for a policy with no groups."""
        if not self.policy.groups:
            return (NO_GROUPS,)
        return tuple(str(m) for m in self.misses)


@dataclasses.dataclass(frozen=True, slots=True)
class Explanation:
    """The decision for a connection and every policy considered, in evaluation order."""

    connection: ConnectionAttributes
    decision: Decision
    policies: tuple[PolicyExplanation, ...]
    unknown: tuple[str, ...] = ()  # names the workload lists that are not known; skipped

    def render(self) -> str:
        """Human-readable text for `ambientctl why`."""
        lines = [f"connection: {self.connection}", f"decision:   {self.decision}"]
        lines += [f"dry-run:    {obs}" for obs in self.decision.dry_run]
        lines += [f"unknown:    {name} (named by the workload, not received; skipped)"
                  for name in self.unknown]
        if not self.policies:
            lines.append("policies:   none apply")
            return "\n".join(lines)
        lines.append(f"policies:   {len(self.policies)} (evaluation order: "
                     "dry-run DENY, DENY, dry-run ALLOW, ALLOW)")
        for pe in self.policies:
            lines.append("  " + _headline(pe, self.decision))
            if pe.matched:
                continue
            if not pe.policy.groups:
                lines.append(f"      {NO_GROUPS}")
            for miss in pe.misses:
                if len(miss.details) == 1:
                    lines.append(f"      {miss}")
                    continue
                lines.append(f"      group {miss.group}: rules[{miss.rules}] failed:")
                lines += [f"        {d}" for d in miss.details]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`ambientctl why --json`)."""
        d = self.decision
        c = self.connection
        return {
            "connection": {
                "source_identity": None if c.source_identity is None else str(c.source_identity),
                "source_ip": str(c.source_ip),
                "destination_ip": str(c.destination_ip),
                "destination_port": c.destination_port,
                "destination_workload": f"{c.destination.namespace}/{c.destination.name}",
            },
            "decision": {
                "allowed": d.allowed, "reason": d.reason, "policy": d.policy, "group": d.group,
                "dry_run": [{"outcome": o.outcome.value, "policy": o.policy, "group": o.group}
                            for o in d.dry_run],
            },
            "unknown_policies": list(self.unknown),
            "policies": [
                {"policy": pe.key, "action": pe.policy.action.name,
                 "scope": pe.policy.scope.name, "dry_run": pe.policy.dry_run,
                 "selected_by": pe.selected_by, "reached": pe.reached,
                 "matched_group": pe.matched_group, "why_not": list(pe.why_not)}
                for pe in self.policies
            ],
        }


def explain(conn: ConnectionAttributes, policies: Sequence[Authorization], *,
            unknown: Sequence[str] = ()) -> Explanation:
    """Evaluate `conn` against `policies`, recording why each policy matched or not."""
    traces: dict[int, tuple[int | None, tuple[GroupTrace, ...]]] = {}

    def recording_match(policy: Authorization) -> int | None:
        trace: list[GroupTrace] = []
        group = match_policy(policy, conn, trace)
        traces[id(policy)] = (group, tuple(trace))
        return group

    decision = decide(policies, recording_match)
    reached = set(traces)
    out = []
    for bucket in partition(policies):
        for policy in bucket:
            if id(policy) not in traces:
                recording_match(policy)
            group, groups = traces[id(policy)]
            out.append(PolicyExplanation(
                policy=policy,
                selected_by=selected_by(policy, conn.destination),
                reached=id(policy) in reached,
                matched_group=group,
                groups=groups,
                misses=_misses(policy, groups, conn),
            ))
    return Explanation(conn, decision, tuple(out), tuple(unknown))


def selected_by(policy: Authorization, workload: Workload) -> str | None:
    """Why `policy` applies to `workload` (AMBIENT-INTERNALS §7.1 scopes), or None."""
    if policy.scope is Scope.GLOBAL:
        return "mesh-wide (root namespace, no selector)"
    if policy.scope is Scope.NAMESPACE and policy.namespace == workload.namespace:
        return f"namespace-wide ({policy.namespace})"
    if policy.key in workload.authorization_policies:
        return "selector (listed by the workload)"
    return None


def _headline(pe: PolicyExplanation, decision: Decision) -> str:
    p = pe.policy
    action = ("dry-run " if p.dry_run else "") + p.action.name
    state = f"MATCHED group {pe.matched_group}" if pe.matched else "no match"
    if pe.key == decision.policy and pe.reached and not p.dry_run:
        state += "  <- decided"
    elif not pe.reached:
        state += "  (not reached)"
    scope = pe.selected_by or f"{p.scope.name}, does not select this workload"
    return f"{action:<15} {pe.key}  [{scope}]  {state}"


def _misses(policy: Authorization, groups: tuple[GroupTrace, ...],
            conn: ConnectionAttributes) -> tuple[GroupMiss, ...]:
    out = []
    for g in groups:
        failed = g.first_failed_rules
        if g.matched or failed is None:
            continue
        rules = policy.groups[g.index].rules[failed.index]
        details = tuple(
            f"matches[{m.index}]: {describe_failure(rules.matches[m.index], m.failed_field, conn)}"
            for m in failed.matches if not m.empty and m.failed_field is not None
        )
        out.append(GroupMiss(g.index, failed.index, details))
    return tuple(out)


_ATTRIBUTE = {
    "destination_ips": "destination IP",
    "source_ips": "source IP",
    "destination_ports": "destination port",
    "service_accounts": "service account",
    "principals": "principal",
    "namespaces": "namespace",
}


def describe_failure(match: Match, field: str, conn: ConnectionAttributes) -> str:
    """One failed field of a Match, e.g. `principal "x" not in principals ["a", "b*"]` or
    `namespace "x" hits not_namespaces "x*"`."""
    base = field.removeprefix("not_")
    value = f"{_ATTRIBUTE[base]} {attribute_value(base, conn)}"
    if field.startswith("not_"):
        excluded = ", ".join(format_value(v) for v in hits(match, field, conn))
        return f"{value} hits {field} {excluded}"
    listed = ", ".join(format_value(v) for v in getattr(match, field))
    return f"{value} not in {field} [{listed}]"


def attribute_value(field: str, conn: ConnectionAttributes) -> str:
    """The connection's value for a (positive) field name, as shown in explanations."""
    ident = conn.source_identity
    if field == "destination_ips":
        return str(conn.destination_ip)
    if field == "source_ips":
        return str(conn.source_ip)
    if field == "destination_ports":
        return str(conn.destination_port)
    if ident is None:
        return NO_IDENTITY
    if field == "service_accounts":
        return f'"{ident.namespace}/{ident.service_account}"'
    if field == "principals":
        return f'"{ident.principal}"'
    return f'"{ident.namespace}"'


def format_value(value: object) -> str:
    """A policy value in AuthorizationPolicy notation."""
    if isinstance(value, StringMatch):
        text = {
            StringMatchKind.EXACT: value.value,
            StringMatchKind.PREFIX: value.value + "*",
            StringMatchKind.SUFFIX: "*" + value.value,
            StringMatchKind.PRESENCE: "*",
        }[value.kind]
        return f'"{text}"'
    if isinstance(value, Cidr):
        return str(value.network)
    if isinstance(value, ServiceAccountMatch):
        return f'"{value.namespace}/{value.service_account}"'
    return str(value)
