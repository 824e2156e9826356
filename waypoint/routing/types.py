"""Frozen route types, converted from `ambient.waypoint.v1.RouteConfiguration` at one gate.

`RouteTable.from_proto(msg)` is the only way protobuf enters routing; it raises
`RouteConfigError` (the xDS client NACKs) naming the resource and field. Everything here is
plain data read by `waypoint.routing.matching` (which request goes where) and
`waypoint.routing.actions` (what to do with it). Durations are seconds (float) or None when
not set; 0.0 means "explicitly disabled" (Gateway API "0s").
Invariants: regexes are compiled here, once; a rule always has at least one match.
"""

from __future__ import annotations

import dataclasses
import enum
import re

import betterproto

from meshcore.protos.ambient.waypoint import v1 as pb
from waypoint.routing.errors import RouteConfigError


class PathKind(enum.Enum):
    PREFIX = "PathPrefix"
    EXACT = "Exact"
    REGEX = "RegularExpression"


@dataclasses.dataclass(frozen=True, slots=True)
class PathMatch:
    kind: PathKind
    value: str
    regex: re.Pattern[str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header (name lower-cased) or query parameter match; `regex` set for RegularExpression."""

    name: str
    value: str
    regex: re.Pattern[str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RouteMatch:
    path: PathMatch | None = None
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class PathModifier:
    replace_prefix: bool  # False: replace the full path
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class Redirect:
    scheme: str = ""
    hostname: str = ""
    path: PathModifier | None = None
    port: int = 0
    status_code: int = 302


@dataclasses.dataclass(frozen=True, slots=True)
class UrlRewrite:
    hostname: str = ""
    path: PathModifier | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    namespace: str
    name: str
    hostname: str
    port: int
    weight: int = 1
    filters: tuple[Filter, ...] = ()
    invalid_reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Mirror:
    backend: Backend
    numerator: int = 100
    denominator: int = 100


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseHeaderModifier:
    modifier: HeaderModifier


Filter = HeaderModifier | ResponseHeaderModifier | Redirect | UrlRewrite | Mirror


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    retry_on: frozenset[str]
    retriable_status_codes: frozenset[int]
    backoff_base: float = 0.025  # seconds; Envoy's default base interval


# Istio's default for every HTTP route (Envoy config dump of an Istio proxy): 2 retries on
# connect-failure, refused-stream, unavailable, cancelled and retriable status code 503.
DEFAULT_RETRY = RetryPolicy(
    attempts=2,
    retry_on=frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                        "retriable-status-codes"}),
    retriable_status_codes=frozenset({503}))


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    delay: float | None = None  # seconds
    delay_percent: float = 0.0
    abort_status: int = 0
    abort_percent: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    matches: tuple[RouteMatch, ...]
    filters: tuple[Filter, ...] = ()
    backends: tuple[Backend, ...] = ()
    request_timeout: float | None = None
    backend_timeout: float | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    fault: Fault | None = None
    invalid_reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    namespace: str
    name: str
    creation_timestamp: str
    parent_is_service: bool
    port: int  # 0: every port
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


_PATH_RANK = {PathKind.EXACT: 3, PathKind.PREFIX: 2, PathKind.REGEX: 1}
Candidate = tuple[Route, int, RouteMatch]  # (route, rule index, match)


def precedence_key(route: Route, rule_index: int, match_index: int,
                   m: RouteMatch) -> tuple[object, ...]:
    """Sort key, smaller first: path type (Exact, PathPrefix, regex, none), longer path, has a
    method, more headers, more query params, older route, "ns/name", rule, match order."""
    rank = _PATH_RANK[m.path.kind] if m.path is not None else 0
    length = len(m.path.value) if m.path is not None else 0
    return (-rank, -length, not m.method, -len(m.headers), -len(m.query_params),
            route.creation_timestamp, route.key, rule_index, match_index)


def ordered_matches(routes: tuple[Route, ...]) -> tuple[Candidate, ...]:
    """Every (route, rule index, match) of `routes` in precedence order (a total order, so
    filtering the result keeps it ordered)."""
    keyed = [(precedence_key(r, i, j, m), (r, i, m))
             for r in routes for i, rule in enumerate(r.rules)
             for j, m in enumerate(rule.matches)]
    keyed.sort(key=lambda t: t[0])
    return tuple(c for _, c in keyed)


@dataclasses.dataclass(frozen=True, slots=True)
class RouteTable:
    """All routes for one Service behind the waypoint; `ordered` is computed at the gate."""

    name: str
    waypoint: str
    hostname: str
    routes: tuple[Route, ...]
    ordered: tuple[Candidate, ...] = ()
    service_namespace: str = ""
    service_name: str = ""

    @classmethod
    def from_proto(cls, msg: pb.RouteConfiguration) -> RouteTable:
        return _Gate(msg.name).table(msg)


def _seconds(d: pb.Duration) -> float | None:
    return d.millis / 1000 if betterproto.serialized_on_wire(d) else None


class _Gate:
    def __init__(self, resource: str) -> None:
        self.resource = resource

    def err(self, field: str, reason: str) -> RouteConfigError:
        return RouteConfigError(self.resource, field, reason)

    def regex(self, text: str, field: str) -> re.Pattern[str]:
        try:
            return re.compile(text)
        except re.error as e:
            raise self.err(field, f"invalid regular expression {text!r}: {e}") from e

    def match(self, m: pb.RouteMatch, f: str) -> RouteMatch:
        path = None
        if betterproto.serialized_on_wire(m.path):
            kind = {pb.PathMatchType.PATH_PREFIX: PathKind.PREFIX,
                    pb.PathMatchType.EXACT: PathKind.EXACT,
                    pb.PathMatchType.REGULAR_EXPRESSION: PathKind.REGEX}.get(m.path.type)
            if kind is None:
                raise self.err(f"{f}.path.type", f"unknown path match type {m.path.type!r}")
            rx = self.regex(m.path.value, f"{f}.path.value") if kind is PathKind.REGEX else None
            path = PathMatch(kind, m.path.value, rx)

        def values(vs: list[pb.ValueMatch], field: str, lower: bool) -> tuple[ValueMatch, ...]:
            return tuple(ValueMatch(
                v.name.lower() if lower else v.name, v.value,
                self.regex(v.value, f"{field}[{i}].value")
                if v.type == pb.ValueMatchType.VALUE_REGULAR_EXPRESSION else None)
                for i, v in enumerate(vs))
        return RouteMatch(path, values(m.headers, f"{f}.headers", True),
                          values(m.query_params, f"{f}.query_params", False), m.method)

    def backend(self, b: pb.Backend, f: str) -> Backend:
        return Backend(b.namespace, b.name, b.hostname, b.port, b.weight,
                       self.filters(b.filters, f"{f}.filters"), b.invalid_reason)

    def filters(self, fs: list[pb.Filter], f: str) -> tuple[Filter, ...]:
        out: list[Filter] = []
        for i, flt in enumerate(fs):
            kind, v = betterproto.which_one_of(flt, "kind")
            where = f"{f}[{i}]"
            if v is None:
                raise self.err(where, "filter has no kind set")
            if kind in ("request_header_modifier", "response_header_modifier"):
                hm = HeaderModifier(tuple((h.name.lower(), h.value) for h in v.set),
                                    tuple((h.name.lower(), h.value) for h in v.add),
                                    tuple(n.lower() for n in v.remove))
                out.append(hm if kind == "request_header_modifier" else ResponseHeaderModifier(hm))
            elif kind == "request_redirect":
                out.append(Redirect(v.scheme, v.hostname, self.path_mod(v.path), v.port,
                                    v.status_code or 302))
            elif kind == "url_rewrite":
                out.append(UrlRewrite(v.hostname, self.path_mod(v.path)))
            elif kind == "request_mirror":
                if v.denominator == 0 or v.numerator > v.denominator:
                    raise self.err(f"{where}.request_mirror",
                                   f"fraction {v.numerator}/{v.denominator} is not in 0..1")
                out.append(Mirror(self.backend(v.backend, f"{where}.request_mirror.backend"),
                                  v.numerator, v.denominator))
            else:
                raise self.err(where, f"unknown filter kind {kind!r}")
        return tuple(out)

    @staticmethod
    def path_mod(p: pb.PathModifier) -> PathModifier | None:
        if not betterproto.serialized_on_wire(p):
            return None
        return PathModifier(p.type == pb.PathModifierType.REPLACE_PREFIX_MATCH, p.value)

    def rule(self, r: pb.RouteRule, f: str) -> RouteRule:
        if not r.matches:
            raise self.err(f"{f}.matches", "a rule needs at least one match")
        retry = DEFAULT_RETRY
        if betterproto.serialized_on_wire(r.retry):
            base = _seconds(r.retry.backoff_base)
            retry = RetryPolicy(r.retry.attempts, frozenset(r.retry.retry_on),
                                frozenset(r.retry.retriable_status_codes),
                                0.025 if base is None else base)
        fault = None
        if betterproto.serialized_on_wire(r.fault):
            d, a = r.fault.delay, r.fault.abort
            fault = Fault(_seconds(d.fixed_delay), d.percentage, a.http_status, a.percentage)
        return RouteRule(
            r.name, tuple(self.match(m, f"{f}.matches[{i}]") for i, m in enumerate(r.matches)),
            self.filters(r.filters, f"{f}.filters"),
            tuple(self.backend(b, f"{f}.backends[{i}]") for i, b in enumerate(r.backends)),
            _seconds(r.timeouts.request), _seconds(r.timeouts.backend_request), retry, fault,
            r.invalid_reason)

    def table(self, msg: pb.RouteConfiguration) -> RouteTable:
        routes = tuple(
            Route(r.namespace, r.name, r.creation_timestamp,
                  r.parent_kind == pb.ParentKind.SERVICE, r.port,
                  tuple(h.lower() for h in r.hostnames),
                  tuple(self.rule(rule, f"routes[{i}].rules[{j}]")
                        for j, rule in enumerate(r.rules)))
            for i, r in enumerate(msg.routes))
        return RouteTable(msg.name, msg.waypoint, msg.hostname, routes, ordered_matches(routes),
                          msg.service_namespace, msg.service_name)
