"""Which rule of which HTTPRoute takes a request: Gateway API matching and precedence. Pure.

Called by the waypoint's request handler (through `waypoint.routing.actions.route_request`)
with a `RouteTable` (from_proto'd) and a `Request`; hands back a `Selected` (route, rule, the
match that hit) or None: 404 when some route applies (`has_candidates`), else default routing
to the Service itself.

Precedence (Gateway API HTTPRoute spec, "matches"; the order is Istio's `sortHTTPRoutes`):
across every candidate match of every rule of every route, the first that hits wins, in order
1. path type: Exact > PathPrefix > RegularExpression > no path (regex placement is
   implementation-specific in the spec; Istio ranks it below prefix);
2. longer path value first (within the same type);
3. a match with a method before one without;
4. more header matches first;
5. more query-parameter matches first;
6. ties: the oldest route (creation timestamp), then "{namespace}/{name}" alphabetically,
   then rule order, then match order within the rule.
Candidates: routes attached to the Service (GAMMA) whose port is 0 or the request's port; if
there are none, routes attached to the waypoint Gateway whose hostnames (empty = any, `*.x`
wildcards) match the request's host. Service routes ignore hostnames (GAMMA).
Match semantics: PathPrefix is element-wise ("/foo" matches "/foo" and "/foo/bar", not
"/foobar"; a trailing "/" in the prefix is ignored); Exact and regex (full match) compare the
path without the query; header names are case-insensitive and repeated headers are compared
joined with ","; a query parameter compares its first value; method is exact.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Sequence

from waypoint.routing.types import (
    PathKind,
    Route,
    RouteMatch,
    RouteRule,
    RouteTable,
    ordered_matches,
    precedence_key,
)

__all__ = ["Request", "Selected", "has_candidates", "ordered_matches", "precedence_key",
           "select"]

@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """The routing-relevant view of one HTTP request. Header names are lower-case."""

    method: str
    path: str  # path and query, as on the request line / :path
    authority: str  # Host / :authority, possibly with a port
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "http"

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers",
                           tuple((n.lower(), v) for n, v in self.headers))

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.split("?", 1)[1] if "?" in self.path else ""

    @property
    def host(self) -> str:
        """The authority without a port, lower-cased (IPv6 brackets kept)."""
        a = self.authority.lower()
        if a.startswith("["):
            return a.split("]", 1)[0] + "]"
        return a.rsplit(":", 1)[0] if a.count(":") == 1 else a

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return ",".join(values) if values else None


@dataclasses.dataclass(frozen=True, slots=True)
class Selected:
    route: Route
    rule: RouteRule
    rule_index: int
    match: RouteMatch


def path_matches(m: RouteMatch, path: str) -> bool:
    if m.path is None:
        return True
    if m.path.kind is PathKind.EXACT:
        return path == m.path.value
    if m.path.kind is PathKind.PREFIX:
        prefix = m.path.value.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")
    assert m.path.regex is not None
    return m.path.regex.fullmatch(path) is not None


def request_matches(m: RouteMatch, request: Request) -> bool:
    if m.method and request.method != m.method:
        return False
    if not path_matches(m, request.path_only):
        return False
    for h in m.headers:
        value = request.header(h.name)
        if value is None or not (h.regex.fullmatch(value) if h.regex else value == h.value):
            return False
    if m.query_params:
        query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
        for q in m.query_params:
            values = query.get(q.name)
            if not values:
                return False
            if not (q.regex.fullmatch(values[0]) if q.regex else values[0] == q.value):
                return False
    return True


def hostname_matches(patterns: Sequence[str], host: str) -> bool:
    """Gateway API hostnames: exact, or `*.suffix` matching one or more leading labels."""
    if not patterns:
        return True
    for p in patterns:
        if p == host or (p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1):
            return True
    return False


def _candidate(route: Route, request: Request, port: int, service_routes: bool) -> bool:
    if route.port not in (0, port) or route.parent_is_service is not service_routes:
        return False
    return service_routes or hostname_matches(route.hostnames, request.host)


def _use_service_routes(table: RouteTable, port: int) -> bool:
    return any(r.parent_is_service and r.port in (0, port) for r in table.routes)


def has_candidates(table: RouteTable, request: Request, port: int) -> bool:
    """Does any route apply to this request at all? If not, the waypoint forwards it to the
    Service itself (default routing); if some do but none matches, the answer is 404."""
    use_service = _use_service_routes(table, port)
    return any(_candidate(r, request, port, use_service) for r in table.routes)


def select(table: RouteTable, request: Request, port: int) -> Selected | None:
    """The winning rule for `request` arriving for the Service's `port`, or None."""
    use_service = _use_service_routes(table, port)
    for route, rule_index, m in table.ordered:
        if _candidate(route, request, port, use_service) and request_matches(m, request):
            return Selected(route, route.rules[rule_index], rule_index, m)
    return None
