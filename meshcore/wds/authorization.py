"""Internal, frozen form of the workload API's L4 `Authorization` (istio.security).

Called by `meshcore.wds.store` for `type.googleapis.com/istio.security.Authorization`
resources (one gate: `Authorization.from_proto`, raising `ConversionError`). Read by the L4
evaluator in `meshcore/authz/` (not here) and by `meshcore.wds.lookup.policies_for`.

Structure and meaning (AMBIENT-INTERNALS §4.3, §7.1; ztunnel `src/rbac.rs`):

* `Authorization.groups` are OR-ed. A policy with **zero groups never matches**.
* A `Group` matches when **every** `Rules` in it matches (AND of `to`, `from`, each `when`);
  a Group with no Rules matches everything.
* A `Rules` matches when **any** non-empty `Match` in it matches (OR of list entries);
  an empty `Match` (`Match.is_empty`) is skipped, i.e. matches nothing.
* Inside a `Match`, each (positive, negative) field pair requires (positive empty OR any
  positive value hits) AND (negative empty OR no negative value hits); the pairs are AND-ed.
* Attribute sources: `principals` against the peer identity without `spiffe://` ("" when no
  identity); `namespaces` and `service_accounts` from the peer's SPIFFE id; `source_ips` the
  TCP peer IP; `destination_ips` / `destination_ports` the resolved upstream pod IP and
  target port.
* Scope: GLOBAL applies to every workload; NAMESPACE to workloads of `namespace`;
  WORKLOAD_SELECTOR only to workloads naming `key` in `Workload.authorization_policies`.
* Evaluation order at ztunnel: dry-run policies only log; any enforced DENY match rejects;
  with no enforced ALLOW the request is allowed; otherwise some ALLOW must match.

`StringMatch.matches` and `Cidr.contains` are the two leaf predicates, kept here because they
define what the fields mean; the evaluator itself lives in `meshcore/authz/`.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress

import betterproto

from meshcore.protos.istio import security as pb
from meshcore.wds._gate import Err, IPAddress, enum_value, ip_from_bytes


class Scope(enum.IntEnum):
    GLOBAL = 0
    NAMESPACE = 1
    WORKLOAD_SELECTOR = 2


class Action(enum.IntEnum):
    ALLOW = 0
    DENY = 1


class StringMatchKind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    PRESENCE = "presence"  # any non-empty value ("*" in an AuthorizationPolicy)


@dataclasses.dataclass(frozen=True, slots=True)
class StringMatch:
    kind: StringMatchKind
    value: str = ""  # unused for PRESENCE

    def matches(self, candidate: str) -> bool:
        """Whether `candidate` (a principal without spiffe://, a namespace) satisfies this."""
        if self.kind is StringMatchKind.EXACT:
            return candidate == self.value
        if self.kind is StringMatchKind.PREFIX:
            return candidate.startswith(self.value)
        if self.kind is StringMatchKind.SUFFIX:
            return candidate.endswith(self.value)
        return candidate != ""


@dataclasses.dataclass(frozen=True, slots=True)
class Cidr:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def contains(self, ip: IPAddress) -> bool:
        """Whether `ip` is inside this block (an IP of the other family never is)."""
        return ip.version == self.network.version and ip in self.network


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceAccountMatch:
    namespace: str
    service_account: str


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """Fields AND-ed; values within a field OR-ed; `not_*` lists must not hit."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[Cidr, ...] = ()
    not_source_ips: tuple[Cidr, ...] = ()
    destination_ips: tuple[Cidr, ...] = ()
    not_destination_ips: tuple[Cidr, ...] = ()
    destination_ports: tuple[int, ...] = ()
    not_destination_ports: tuple[int, ...] = ()
    service_accounts: tuple[ServiceAccountMatch, ...] = ()
    not_service_accounts: tuple[ServiceAccountMatch, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when no field is set; ztunnel skips such a Match (it matches nothing)."""
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """Matches OR-ed (empty Matches skipped)."""

    matches: tuple[Match, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """Rules AND-ed; no Rules = match-all."""

    rules: tuple[Rules, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Authorization:
    """An L4 policy. Resource name = `key` = `<namespace>/<name>`."""

    name: str
    namespace: str
    scope: Scope
    action: Action
    groups: tuple[Group, ...] = ()
    dry_run: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_proto(cls, msg: pb.Authorization, *, resource: str = "") -> Authorization:
        """The gate: validate an `istio.security.Authorization`; raise ConversionError."""
        key = f"{msg.namespace}/{msg.name}"
        err = Err("Authorization", resource or key)
        if not msg.name:
            raise err("name", "is empty")
        if not msg.namespace:
            raise err("namespace", "is empty")
        if resource and resource != key:
            raise err("", f"'<namespace>/<name>' is {key!r}, not the resource name")
        groups = tuple(
            Group(
                tuple(
                    Rules(
                        tuple(
                            _match(m, err, f"groups[{g}].rules[{r}].matches[{i}]")
                            for i, m in enumerate(rules.matches)
                        )
                    )
                    for r, rules in enumerate(group.rules)
                )
            )
            for g, group in enumerate(msg.groups)
        )
        return cls(
            name=msg.name,
            namespace=msg.namespace,
            scope=enum_value(Scope, msg.scope, err, "scope"),
            action=enum_value(Action, msg.action, err, "action"),
            groups=groups,
            dry_run=msg.dry_run,
        )


def _string_match(m: pb.StringMatch, err: Err, field: str) -> StringMatch:
    which, value = betterproto.which_one_of(m, "match_type")
    if which == "exact":
        return StringMatch(StringMatchKind.EXACT, str(value))
    if which == "prefix":
        return StringMatch(StringMatchKind.PREFIX, str(value))
    if which == "suffix":
        return StringMatch(StringMatchKind.SUFFIX, str(value))
    if which == "presence":
        return StringMatch(StringMatchKind.PRESENCE)
    raise err(field, "StringMatch has none of exact/prefix/suffix/presence")


def _cidr(a: pb.Address, err: Err, field: str) -> Cidr:
    ip = ip_from_bytes(a.address, err, f"{field}.address")
    if a.length > ip.max_prefixlen:
        raise err(f"{field}.length", f"/{a.length} is longer than /{ip.max_prefixlen}")
    return Cidr(ipaddress.ip_network((ip, a.length), strict=False))


def _ports(values: list[int], err: Err, field: str) -> tuple[int, ...]:
    for i, p in enumerate(values):
        if not 0 < p <= 65535:
            raise err(f"{field}[{i}]", f"port {p} is out of range")
    return tuple(values)


def _match(m: pb.Match, err: Err, field: str) -> Match:
    def strings(name: str) -> tuple[StringMatch, ...]:
        return tuple(
            _string_match(s, err, f"{field}.{name}[{i}]")
            for i, s in enumerate(getattr(m, name))
        )

    def cidrs(name: str) -> tuple[Cidr, ...]:
        return tuple(_cidr(a, err, f"{field}.{name}[{i}]") for i, a in enumerate(getattr(m, name)))

    def accounts(name: str) -> tuple[ServiceAccountMatch, ...]:
        return tuple(ServiceAccountMatch(s.namespace, s.service_account) for s in getattr(m, name))

    return Match(
        namespaces=strings("namespaces"),
        not_namespaces=strings("not_namespaces"),
        principals=strings("principals"),
        not_principals=strings("not_principals"),
        source_ips=cidrs("source_ips"),
        not_source_ips=cidrs("not_source_ips"),
        destination_ips=cidrs("destination_ips"),
        not_destination_ips=cidrs("not_destination_ips"),
        destination_ports=_ports(m.destination_ports, err, f"{field}.destination_ports"),
        not_destination_ports=_ports(
            m.not_destination_ports, err, f"{field}.not_destination_ports"
        ),
        service_accounts=accounts("service_accounts"),
        not_service_accounts=accounts("not_service_accounts"),
    )
