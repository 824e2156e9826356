"""The waypoint's L7 authorization (pure): Istio AuthorizationPolicy with targetRefs.

`L7Policy.from_proto` is the gate for `ambient.waypoint.v1.L7Authorization`;
`evaluate(RequestAttributes, applicable(policies, waypoint, hostname)) -> Decision`.
See docs/waypoint.md.
"""

from waypoint.policy.errors import PolicyConfigError
from waypoint.policy.evaluate import (
    DENIED_BODY,
    Decision,
    RequestAttributes,
    applicable,
    evaluate,
    match_policy,
)
from waypoint.policy.types import Action, L7Policy, path_template_regex

__all__ = [
    "DENIED_BODY",
    "Action",
    "Decision",
    "L7Policy",
    "PolicyConfigError",
    "RequestAttributes",
    "applicable",
    "evaluate",
    "match_policy",
    "path_template_regex",
]
