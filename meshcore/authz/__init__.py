"""The L4 authorization evaluator: ztunnel's inbound policy check as pure functions.

`evaluate(conn, policies) -> Decision` decides whether a connection is allowed and names the
deciding policy and group; `explain(conn, policies) -> Explanation` runs the same decision with
a recorder and says why each policy matched or not (for `ambientctl why`). `evaluate_in` /
`explain_in` select the policies from a `meshcore.wds` Snapshot. Inputs are the frozen types of
`meshcore.wds` (policies) and `ConnectionAttributes`. See docs/authorization.md.
"""

from meshcore.authz.attributes import NO_IDENTITY, ConnectionAttributes
from meshcore.authz.decision import (
    REASON_NO_ALLOW_POLICIES,
    REASON_NOT_ALLOWED,
    REJECTION_PREFIX,
    Decision,
    DryRunObservation,
    DryRunOutcome,
    evaluate,
    reason_allowed,
    reason_denied,
)
from meshcore.authz.errors import AuthzError, InvalidConnectionError
from meshcore.authz.explain import Explanation, PolicyExplanation, explain, selected_by
from meshcore.authz.matching import GroupTrace, MatchTrace, RulesTrace, match_policy
from meshcore.authz.selection import evaluate_in, explain_in, unknown_policies

__all__ = [
    "NO_IDENTITY",
    "REASON_NOT_ALLOWED",
    "REASON_NO_ALLOW_POLICIES",
    "REJECTION_PREFIX",
    "AuthzError",
    "ConnectionAttributes",
    "Decision",
    "DryRunObservation",
    "DryRunOutcome",
    "Explanation",
    "GroupTrace",
    "InvalidConnectionError",
    "MatchTrace",
    "PolicyExplanation",
    "RulesTrace",
    "evaluate",
    "evaluate_in",
    "explain",
    "explain_in",
    "match_policy",
    "reason_allowed",
    "reason_denied",
    "selected_by",
    "unknown_policies",
]
