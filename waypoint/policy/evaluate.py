"""`evaluate(request, policies) -> Decision`: the waypoint's L7 authorization. Pure.

Called by the waypoint's request handler for every request (after parsing the headers, before
routing) with the policies that apply (`applicable(policies, waypoint, hostname)`); the
Decision goes to the handler (403 "RBAC: access denied" when denied, as Envoy answers) and the
access log.

Order (Istio, REFERENCE §7, AMBIENT-INTERNALS §7.4; CUSTOM is not supported, the translator
reports it): dry-run policies only observe; the first enforced DENY that matches denies; with
no enforced ALLOW the request is allowed; else the first matching ALLOW allows; none ⇒ denied.
Match semantics (Istio AuthorizationPolicy): a policy with zero rules never matches; rules are
OR-ed; in a rule `from` entries are OR-ed, `to` entries OR-ed, `when` conditions AND-ed, and
the three parts AND-ed (an empty part matches); inside a Source/Operation every field pair
needs (positive empty OR a hit) AND (negative empty OR no hit).
Attributes: principal = the peer SPIFFE id without `spiffe://` (the source workload: ztunnel
presents the client's certificate to the waypoint), namespace and service account from it;
hosts compare case-insensitively, and a policy host without a port also matches the request
host with any port (Istio adds `host:*`); paths compare without the query string (templates
and exact alike); methods are exact; `request.headers[name]` conditions compare the header
(absent ⇒ no hit, so only `notValues` can match); there is no RequestAuthentication, so
request principals and `request.auth.*` are always absent.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from meshcore.identity import SpiffeId
from waypoint.policy.types import (
    IP_KEYS,
    Action,
    Condition,
    L7Policy,
    Network,
    Operation,
    Rule,
    Source,
    StringMatch,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")
DENIED_BODY = "RBAC: access denied"


@dataclasses.dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What the waypoint knows about one request. Header names lower-case."""

    method: str
    path: str  # with or without a query; the query is ignored
    host: str  # :authority / Host, maybe with a port
    headers: tuple[tuple[str, str], ...] = ()
    source_identity: SpiffeId | None = None
    destination_port: int = 0  # the Service port the request was sent to
    source_ip: IPAddress | None = None
    remote_ip: IPAddress | None = None
    destination_ip: IPAddress | None = None

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ",".join(values) if values else None

    @property
    def principal(self) -> str | None:
        return None if self.source_identity is None else self.source_identity.principal


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None = None  # "ns/name" of the deciding policy; None when the default decided
    rule: int | None = None  # index of the matching rule in `policy`
    dry_run: tuple[str, ...] = ()  # what dry-run policies would have done, for logs

    @property
    def status(self) -> int:
        return 200 if self.allowed else 403

    def __str__(self) -> str:
        where = f" (rule {self.rule})" if self.rule is not None else ""
        return f"{'ALLOW' if self.allowed else 'DENY'}: {self.reason}{where}"


def _any(ms: Sequence[StringMatch], value: str | None, ignore_case: bool = False) -> bool:
    return any(m.matches(value, ignore_case=ignore_case) for m in ms)


def _pair(pos: Sequence[T], neg: Sequence[T], hit: Callable[[T], bool]) -> bool:
    """(positive empty OR some value hits) AND (no negative value hits)."""
    return (not pos or any(hit(v) for v in pos)) and not any(hit(v) for v in neg)


def _in(net: Network, ip: IPAddress | None) -> bool:
    return ip is not None and ip.version == net.version and ip in net


def _host_hit(m: StringMatch, req: RequestAttributes) -> bool:
    host = req.host
    if ":" not in m.value and not host.startswith("[") and host.count(":") == 1:
        host = host.rsplit(":", 1)[0]  # policy host without port: any port
    return m.matches(host, ignore_case=True)


def _service_account(v: str, ident: SpiffeId | None) -> bool:
    return ident is not None and v == f"{ident.namespace}/{ident.service_account}"


def source_matches(s: Source, req: RequestAttributes) -> bool:
    ident = req.source_identity
    ns = ident.namespace if ident is not None else None
    return (
        _pair(s.principals, s.not_principals, lambda m: m.matches(req.principal))
        and _pair(s.namespaces, s.not_namespaces, lambda m: m.matches(ns))
        and _pair(s.service_accounts, s.not_service_accounts,
                  lambda v: _service_account(v, ident))
        and _pair(s.request_principals, s.not_request_principals, lambda m: False)
        and _pair(s.ip_blocks, s.not_ip_blocks, lambda n: _in(n, req.source_ip))
        and _pair(s.remote_ip_blocks, s.not_remote_ip_blocks,
                  lambda n: _in(n, req.remote_ip or req.source_ip)))


def operation_matches(o: Operation, req: RequestAttributes) -> bool:
    path = req.path.split("?", 1)[0]
    return (
        _pair(o.hosts, o.not_hosts, lambda m: _host_hit(m, req))
        and _pair(o.ports, o.not_ports, lambda p: p == req.destination_port)
        and _pair(o.methods, o.not_methods, lambda m: m.matches(req.method))
        and _pair(o.paths, o.not_paths, lambda m: m.matches(path)))


def _attribute(key: str, req: RequestAttributes) -> str | None:
    ident = req.source_identity
    if key.startswith("request.headers["):
        return req.header(key[len("request.headers["):-1])
    if key == "source.namespace":
        return ident.namespace if ident else None
    if key == "source.principal":
        return req.principal
    if key == "destination.port":
        return str(req.destination_port) if req.destination_port else None
    return None  # request.auth.*: no RequestAuthentication, always absent


def condition_matches(c: Condition, req: RequestAttributes) -> bool:
    if c.key in IP_KEYS:
        ip = {"source.ip": req.source_ip, "remote.ip": req.remote_ip or req.source_ip,
              "destination.ip": req.destination_ip}[c.key]

        def hit(m: StringMatch) -> bool:
            return _in(ipaddress.ip_network(m.value, strict=False), ip)
        return _pair(c.values, c.not_values, hit)
    value = _attribute(c.key, req)
    return _pair(c.values, c.not_values, lambda m: m.matches(value))


def rule_matches(r: Rule, req: RequestAttributes) -> bool:
    return ((not r.sources or any(source_matches(s, req) for s in r.sources))
            and (not r.operations or any(operation_matches(o, req) for o in r.operations))
            and all(condition_matches(c, req) for c in r.conditions))


def match_policy(p: L7Policy, req: RequestAttributes) -> int | None:
    """Index of the first matching rule, or None (zero rules never match)."""
    return next((i for i, r in enumerate(p.rules) if rule_matches(r, req)), None)


def applicable(policies: Iterable[L7Policy], waypoint: str, hostname: str) -> list[L7Policy]:
    """The policies bound to traffic for Service `hostname` at `waypoint`, in key order."""
    return sorted((p for p in policies if p.applies(waypoint, hostname)), key=lambda p: p.key)


def evaluate(req: RequestAttributes, policies: Sequence[L7Policy]) -> Decision:
    """Decide `req` under `policies` (those `applicable` to it), DENY before ALLOW."""
    seen: list[str] = []
    for p in policies:
        if p.dry_run and (i := match_policy(p, req)) is not None:
            seen.append(f"dry-run {p.action.value} policy {p.key} rule {i} matched")
    for p in policies:
        if p.action is Action.DENY and not p.dry_run and (i := match_policy(p, req)) is not None:
            return Decision(False, f"denied by {p.key}", p.key, i, tuple(seen))
    allows = [p for p in policies if p.action is Action.ALLOW and not p.dry_run]
    if not allows:
        return Decision(True, "no allow policies", None, None, tuple(seen))
    for p in allows:
        if (i := match_policy(p, req)) is not None:
            return Decision(True, f"allowed by {p.key}", p.key, i, tuple(seen))
    return Decision(False, "allow policies exist, but none allowed", None, None, tuple(seen))
