"""`evaluate(conn, policies) -> Decision`: ztunnel's inbound authorization, as a pure function.

Called by ztunnel's inbound HBONE and inbound plaintext paths (and again for open connections
when policies change), by `explain` (with a recorder) and through it by `ambientctl why`. The
Decision goes to the caller, which answers 401 / closes the connection, and to the access log.

Order (AMBIENT-INTERNALS §7.1; ztunnel `src/state.rs` `assert_rbac`, dry-run from
istio/ztunnel#1659 and #1745). Policies are split by action and dry-run, keeping their order:
1. every dry-run DENY that matches is observed (logged only);
2. the first enforced DENY that matches rejects: "explicitly denied by: ns/name";
3. every dry-run ALLOW that matches is observed;
4. no enforced ALLOW ⇒ allow ("no allow policies"); if dry-run ALLOWs exist and none
   matched, that is observed too (enforcing them would reject);
5. the first enforced ALLOW that matches allows ("allowed by ns/name"); none ⇒ reject:
   "allow policies exist, but none allowed".
Dry-run observations never change `allowed`. The rejection texts are ztunnel's
`AuthorizationRejectionError` words, so access logs read the same; the two "allowed" texts
are ours (ztunnel only logs them at debug).

The caller chooses the policies (normally `meshcore.wds.lookup.policies_for`); when several
match, the first in that order decides. ztunnel keeps per-namespace policies in hash sets, so
it defines no order among matching policies; the outcome (`allowed`) never depends on order.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence

from meshcore.authz.attributes import ConnectionAttributes
from meshcore.authz.matching import match_policy
from meshcore.wds.authorization import Action, Authorization

REASON_NO_ALLOW_POLICIES = "no allow policies"
REASON_NOT_ALLOWED = "allow policies exist, but none allowed"
REJECTION_PREFIX = "connection closed due to policy rejection: "


def reason_denied(key: str) -> str:
    """ztunnel's `ExplicitlyDenied` text for policy `ns/name`."""
    return f"explicitly denied by: {key}"


def reason_allowed(key: str) -> str:
    return f"allowed by {key}"


class DryRunOutcome(enum.Enum):
    """What a dry-run policy would have done; the values are ztunnel's debug log messages."""

    WOULD_DENY = "dry-run deny policy match"
    WOULD_ALLOW = "dry-run allow policy match"
    WOULD_NOT_ALLOW = "dry-run no allow policies match"


@dataclasses.dataclass(frozen=True, slots=True)
class DryRunObservation:
    """A dry-run policy's effect, for logs only. `policy`/`group` are None for WOULD_NOT_ALLOW."""

    outcome: DryRunOutcome
    policy: str | None = None
    group: int | None = None

    def __str__(self) -> str:
        if self.policy is None:
            return self.outcome.value
        return f"{self.outcome.value}: {self.policy} (group {self.group})"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one connection.

    Attributes:
        allowed: whether the connection may proceed.
        reason: in ztunnel's words (see the module docstring).
        policy: `ns/name` of the deciding DENY or ALLOW policy; None when the default decided
            (no ALLOW policies, or none of them matched).
        group: index of the matching group (AuthorizationPolicy rule) in `policy`, or None.
        dry_run: what dry-run policies would have done, in evaluation order (logs only).
    """

    allowed: bool
    reason: str
    policy: str | None = None
    group: int | None = None
    dry_run: tuple[DryRunObservation, ...] = ()

    @property
    def rejection_error(self) -> str | None:
        """The access log `error` text ztunnel writes for a rejection; None when allowed."""
        return None if self.allowed else REJECTION_PREFIX + self.reason

    def __str__(self) -> str:
        verdict = "ALLOW" if self.allowed else "DENY"
        where = f" (group {self.group})" if self.group is not None else ""
        return f"{verdict}: {self.reason}{where}"


def partition(policies: Sequence[Authorization]) -> tuple[list[Authorization], ...]:
    """(dry-run DENY, DENY, dry-run ALLOW, ALLOW), each in the given order: evaluation order."""
    return (
        [p for p in policies if p.action is Action.DENY and p.dry_run],
        [p for p in policies if p.action is Action.DENY and not p.dry_run],
        [p for p in policies if p.action is Action.ALLOW and p.dry_run],
        [p for p in policies if p.action is Action.ALLOW and not p.dry_run],
    )


Matcher = Callable[[Authorization], "int | None"]


def decide(policies: Sequence[Authorization], match: Matcher) -> Decision:
    """The decision procedure. `match(policy)` gives the first matching group or None.

    The single implementation behind `evaluate` and `explain`; it calls `match` only for the
    policies ztunnel would evaluate, in ztunnel's order.
    """
    deny_dry, deny, allow_dry, allow = partition(policies)
    seen: list[DryRunObservation] = []
    for p in deny_dry:
        g = match(p)
        if g is not None:
            seen.append(DryRunObservation(DryRunOutcome.WOULD_DENY, p.key, g))
    for p in deny:
        g = match(p)
        if g is not None:
            return Decision(False, reason_denied(p.key), p.key, g, tuple(seen))
    dry_allow_matched = False
    for p in allow_dry:
        g = match(p)
        if g is not None:
            dry_allow_matched = True
            seen.append(DryRunObservation(DryRunOutcome.WOULD_ALLOW, p.key, g))
    if not allow:
        if allow_dry and not dry_allow_matched:
            seen.append(DryRunObservation(DryRunOutcome.WOULD_NOT_ALLOW))
        return Decision(True, REASON_NO_ALLOW_POLICIES, None, None, tuple(seen))
    for p in allow:
        g = match(p)
        if g is not None:
            return Decision(True, reason_allowed(p.key), p.key, g, tuple(seen))
    return Decision(False, REASON_NOT_ALLOWED, None, None, tuple(seen))


def evaluate(conn: ConnectionAttributes, policies: Sequence[Authorization]) -> Decision:
    """Decide whether `conn` is allowed under `policies` (those selected for its destination)."""
    return decide(policies, lambda p: match_policy(p, conn))
