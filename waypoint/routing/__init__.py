"""The waypoint's HTTP routing core (pure): HTTPRoute tables, matching, filters, plans.

`RouteTable.from_proto` is the gate for `ambient.waypoint.v1.RouteConfiguration`;
`route_request(table, request, port, rng)` gives a `LocalResponse` or a `Forward` plan.
See docs/waypoint.md.
"""

from waypoint.routing.actions import (
    Forward,
    LocalResponse,
    default_forward,
    modify_headers,
    pick_weighted,
    plan,
    route_request,
)
from waypoint.routing.errors import RouteConfigError
from waypoint.routing.matching import Request, Selected, ordered_matches, select
from waypoint.routing.types import DEFAULT_RETRY, Backend, RetryPolicy, RouteTable

__all__ = [
    "DEFAULT_RETRY",
    "Backend",
    "Forward",
    "LocalResponse",
    "Request",
    "RetryPolicy",
    "RouteConfigError",
    "RouteTable",
    "Selected",
    "default_forward",
    "modify_headers",
    "ordered_matches",
    "pick_weighted",
    "plan",
    "route_request",
    "select",
]
