"""Frozen L7 authorization types, converted from `ambient.waypoint.v1.L7Authorization`.

`L7Policy.from_proto(msg)` is the one gate (raises `PolicyConfigError`, which the xDS client
NACKs). Read by `waypoint.policy.evaluate`. Leaf predicates live here because they define what
a field means: `StringMatch.matches` (Istio's exact / prefix / suffix / presence, and path
templates) and `path_template_regex` (Envoy URI template semantics as Istio documents them:
`{*}` one non-empty path segment, `{**}` zero or more characters including `/`, last operator).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re

from meshcore.protos.ambient.waypoint import v1 as pb
from waypoint.policy.errors import PolicyConfigError


class Action(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class Kind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    PRESENCE = "presence"
    TEMPLATE = "template"


def path_template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\*\*\}|\{\*\})", template)
    rx = "".join("[^/]+" if p == "{*}" else ".*" if p == "{**}" else re.escape(p)
                 for p in parts)
    return re.compile(rx)


@dataclasses.dataclass(frozen=True, slots=True)
class StringMatch:
    kind: Kind
    value: str = ""
    template: re.Pattern[str] | None = None

    def matches(self, candidate: str | None, *, ignore_case: bool = False) -> bool:
        """Whether `candidate` satisfies this; None (attribute absent) never does."""
        if candidate is None:
            return False
        value = self.value
        if ignore_case:
            candidate, value = candidate.lower(), value.lower()
        if self.kind is Kind.EXACT:
            return candidate == value
        if self.kind is Kind.PREFIX:
            return candidate.startswith(value)
        if self.kind is Kind.SUFFIX:
            return candidate.endswith(value)
        if self.kind is Kind.PRESENCE:
            return candidate != ""
        assert self.template is not None
        return self.template.fullmatch(candidate) is not None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    service_accounts: tuple[str, ...] = ()  # "ns/sa"
    not_service_accounts: tuple[str, ...] = ()
    request_principals: tuple[StringMatch, ...] = ()
    not_request_principals: tuple[StringMatch, ...] = ()
    ip_blocks: tuple[Network, ...] = ()
    not_ip_blocks: tuple[Network, ...] = ()
    remote_ip_blocks: tuple[Network, ...] = ()
    not_remote_ip_blocks: tuple[Network, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    hosts: tuple[StringMatch, ...] = ()
    not_hosts: tuple[StringMatch, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[StringMatch, ...] = ()
    not_methods: tuple[StringMatch, ...] = ()
    paths: tuple[StringMatch, ...] = ()
    not_paths: tuple[StringMatch, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    key: str
    values: tuple[StringMatch, ...] = ()
    not_values: tuple[StringMatch, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class L7Policy:
    namespace: str
    name: str
    action: Action
    rules: tuple[Rule, ...] = ()
    waypoints: frozenset[str] = frozenset()
    all_waypoints: bool = False
    service_hostnames: frozenset[str] = frozenset()
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def applies(self, waypoint: str, service_hostname: str) -> bool:
        """Does this policy bind to traffic at `waypoint` ("ns/name") for that Service?"""
        return (self.all_waypoints or waypoint in self.waypoints
                or service_hostname in self.service_hostnames)

    @classmethod
    def from_proto(cls, msg: pb.L7Authorization) -> L7Policy:
        return _Gate(f"{msg.namespace}/{msg.name}").policy(msg)


_KINDS = {pb.StringMatchKind.MATCH_EXACT: Kind.EXACT, pb.StringMatchKind.MATCH_PREFIX: Kind.PREFIX,
          pb.StringMatchKind.MATCH_SUFFIX: Kind.SUFFIX,
          pb.StringMatchKind.MATCH_PRESENCE: Kind.PRESENCE,
          pb.StringMatchKind.MATCH_TEMPLATE: Kind.TEMPLATE}


class _Gate:
    def __init__(self, resource: str) -> None:
        self.resource = resource

    def err(self, field: str, reason: str) -> PolicyConfigError:
        return PolicyConfigError(self.resource, field, reason)

    def strings(self, ms: list[pb.StringMatch], f: str) -> tuple[StringMatch, ...]:
        out = []
        for i, m in enumerate(ms):
            kind = _KINDS.get(m.kind)
            if kind is None:
                raise self.err(f"{f}[{i}]", f"unknown string match kind {m.kind!r}")
            if kind is Kind.TEMPLATE and not m.value.startswith("/"):
                raise self.err(f"{f}[{i}]", f"path template {m.value!r} must start with /")
            out.append(StringMatch(kind, m.value, path_template_regex(m.value)
                                   if kind is Kind.TEMPLATE else None))
        return tuple(out)

    def cidrs(self, values: list[str], f: str) -> tuple[Network, ...]:
        try:
            return tuple(ipaddress.ip_network(v, strict=False) for v in values)
        except ValueError as e:
            raise self.err(f, str(e)) from e

    def source(self, s: pb.L7Source, f: str) -> Source:
        return Source(
            self.strings(s.principals, f"{f}.principals"),
            self.strings(s.not_principals, f"{f}.not_principals"),
            self.strings(s.namespaces, f"{f}.namespaces"),
            self.strings(s.not_namespaces, f"{f}.not_namespaces"),
            tuple(s.service_accounts), tuple(s.not_service_accounts),
            self.strings(s.request_principals, f"{f}.request_principals"),
            self.strings(s.not_request_principals, f"{f}.not_request_principals"),
            self.cidrs(s.ip_blocks, f"{f}.ip_blocks"),
            self.cidrs(s.not_ip_blocks, f"{f}.not_ip_blocks"),
            self.cidrs(s.remote_ip_blocks, f"{f}.remote_ip_blocks"),
            self.cidrs(s.not_remote_ip_blocks, f"{f}.not_remote_ip_blocks"))

    def operation(self, o: pb.L7Operation, f: str) -> Operation:
        return Operation(
            self.strings(o.hosts, f"{f}.hosts"), self.strings(o.not_hosts, f"{f}.not_hosts"),
            tuple(o.ports), tuple(o.not_ports),
            self.strings(o.methods, f"{f}.methods"),
            self.strings(o.not_methods, f"{f}.not_methods"),
            self.strings(o.paths, f"{f}.paths"), self.strings(o.not_paths, f"{f}.not_paths"))

    def policy(self, msg: pb.L7Authorization) -> L7Policy:
        if msg.action not in (pb.AuthorizationAction.ALLOW, pb.AuthorizationAction.DENY):
            raise self.err("action", f"unsupported action {msg.action!r} (ALLOW or DENY)")
        for i, r in enumerate(msg.rules):
            for j, c in enumerate(r.when):
                if c.key in IP_KEYS:
                    self.cidrs([m.value for m in c.values + c.not_values],
                               f"rules[{i}].when[{j}]")
        rules = tuple(
            Rule(tuple(self.source(s, f"rules[{i}].from[{j}]") for j, s in enumerate(r.from_)),
                 tuple(self.operation(o, f"rules[{i}].to[{j}]") for j, o in enumerate(r.to)),
                 tuple(Condition(c.key, self.strings(c.values, f"rules[{i}].when[{j}].values"),
                                 self.strings(c.not_values, f"rules[{i}].when[{j}].not_values"))
                       for j, c in enumerate(r.when)))
            for i, r in enumerate(msg.rules))
        action = Action.DENY if msg.action == pb.AuthorizationAction.DENY else Action.ALLOW
        return L7Policy(msg.namespace, msg.name, action, rules, frozenset(msg.waypoints),
                        msg.all_waypoints, frozenset(msg.service_hostnames), msg.dry_run)
