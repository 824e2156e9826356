"""AuthorizationPolicy → `istio.security.Authorization` for ztunnel (AMBIENT-INTERNALS §7.2).

Called by translator.py. Pure. Returns the converted policy (or None when it is not for
ztunnel) and status messages, as istiod does (`[is] .../ambient/authorization.go`):
* `targetRef(s)` policies belong to waypoints: not sent, no message;
* `istio.io/dry-run: "true"`: sent with `dry_run` only if MeshConfig.enable_dry_run (istiod's
  EnableWdsDryRunAuthzPol, default off); otherwise not sent, with a status message;
* CUSTOM / AUDIT: not sent, `UnsupportedValue` "ztunnel does not support the X action";
* scope: selector ⇒ WORKLOAD_SELECTOR; none ⇒ NAMESPACE; none in the root namespace ⇒ GLOBAL;
* each rule ⇒ one Group: `to[]` ⇒ one Rules (dest ports), `from[]` ⇒ one Rules (sources),
  each `when` ⇒ its own Rules with one Match (L4 keys only fill fields);
* HTTP-only attributes: in ALLOW the whole rule is dropped (stricter); in DENY only those
  attributes are dropped (broader; empty Matches are kept and ztunnel skips them, so a rule
  left with nothing L4 denies nothing). Either way an `UnsupportedValue` message lists them.
Values were validated at the model gate, so conversions here cannot fail.
"""

from __future__ import annotations

import ipaddress

import betterproto.lib.google.protobuf as pb

from istiod_lite.translate.mesh import MeshConfig, StatusMessage
from meshcore.model import AuthorizationPolicy, Operation, Rule, Source
from meshcore.protos.istio.security import (
    Action,
    Address,
    Authorization,
    Group,
    Match,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
)

DRY_RUN_ANNOTATION = "istio.io/dry-run"
L4_WHEN_KEYS = frozenset(
    {"source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"})

_HTTP_OPERATION_FIELDS = (("hosts", "hosts"), ("notHosts", "not_hosts"), ("methods", "methods"),
                          ("notMethods", "not_methods"), ("paths", "paths"),
                          ("notPaths", "not_paths"))
_HTTP_SOURCE_FIELDS = (("remoteIpBlocks", "remote_ip_blocks"),
                       ("notRemoteIpBlocks", "not_remote_ip_blocks"),
                       ("requestPrincipals", "request_principals"),
                       ("notRequestPrincipals", "not_request_principals"),
                       ("trustDomains", "trust_domains"), ("notTrustDomains", "not_trust_domains"))

_HTTP_FMT = ("ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use "
             "a waypoint proxy to enforce HTTP rules. {}")
_DENY_NO_EFFECT = ("After omitting unsupported HTTP attributes, this DENY policy has no "
                   "enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy "
                   "and use a targetRef to enforce this policy.")
_DENY_MIXED = ("DENY policy with HTTP attributes is enforced without the HTTP rules. This will "
               "be more restrictive than requested.")
_ALLOW_DROPPED = ("Within an ALLOW policy, rules matching HTTP attributes are omitted. This will "
                  "be more restrictive than requested.")


def string_matches(values: tuple[str, ...]) -> list[StringMatch]:
    """`*` ⇒ presence, `*x` ⇒ suffix, `x*` ⇒ prefix, else exact."""
    out = []
    for v in values:
        if v == "*":
            out.append(StringMatch(presence=pb.Empty()))
        elif v.startswith("*"):
            out.append(StringMatch(suffix=v[1:]))
        elif v.endswith("*"):
            out.append(StringMatch(prefix=v[:-1]))
        else:
            out.append(StringMatch(exact=v))
    return out


def cidrs(values: tuple[str, ...]) -> list[Address]:
    """IPs/CIDRs as {address bytes, prefix length}; a bare IP gets /32 or /128. The address
    keeps any host bits as written (as istiod does)."""
    out = []
    for v in values:
        iface = ipaddress.ip_interface(v)
        out.append(Address(address=iface.ip.packed, length=iface.network.prefixlen))
    return out


def ports(values: tuple[str, ...]) -> list[int]:
    return [int(v) for v in values]


def service_accounts(values: tuple[str, ...], namespace: str) -> list[ServiceAccountMatch]:
    out = []
    for v in values:
        ns, sep, sa = v.partition("/")
        out.append(ServiceAccountMatch(namespace=ns, service_account=sa) if sep
                   else ServiceAccountMatch(namespace=namespace, service_account=v))
    return out


def _http_fields(obj: Operation | Source, fields: tuple[tuple[str, str], ...]) -> list[str]:
    return [camel for camel, attr in fields if getattr(obj, attr)]


def _when_match(key: str, values: tuple[str, ...], negate: bool, m: Match) -> None:
    if not values:
        return
    prefix = "not_" if negate else ""
    if key == "source.namespace":
        setattr(m, f"{prefix}namespaces", string_matches(values))
    elif key == "source.principal":
        setattr(m, f"{prefix}principals", string_matches(values))
    elif key == "source.ip":
        setattr(m, f"{prefix}source_ips", cidrs(values))
    elif key == "destination.ip":
        setattr(m, f"{prefix}destination_ips", cidrs(values))
    elif key == "destination.port":
        setattr(m, f"{prefix}destination_ports", ports(values))


def convert_rule(action: Action, rule: Rule, namespace: str) -> tuple[list[Rules] | None, set[str]]:
    """The Rules of one Group (None when an ALLOW rule is dropped) and the HTTP attributes
    found."""
    http: set[str] = set()
    to_matches = []
    for op in rule.to:
        http.update(_http_fields(op, _HTTP_OPERATION_FIELDS))
        to_matches.append(Match(destination_ports=ports(op.ports),
                                not_destination_ports=ports(op.not_ports)))
    from_matches = []
    for src in rule.from_:
        http.update(_http_fields(src, _HTTP_SOURCE_FIELDS))
        from_matches.append(Match(
            source_ips=cidrs(src.ip_blocks), not_source_ips=cidrs(src.not_ip_blocks),
            namespaces=string_matches(src.namespaces),
            not_namespaces=string_matches(src.not_namespaces),
            service_accounts=service_accounts(src.service_accounts, namespace),
            not_service_accounts=service_accounts(src.not_service_accounts, namespace),
            principals=string_matches(src.principals),
            not_principals=string_matches(src.not_principals)))
    rules = []
    if to_matches:
        rules.append(Rules(matches=to_matches))
    if from_matches:
        rules.append(Rules(matches=from_matches))
    for cond in rule.when:
        if cond.key not in L4_WHEN_KEYS:
            http.add(cond.key)
        m = Match()
        _when_match(cond.key, cond.values, False, m)
        _when_match(cond.key, cond.not_values, True, m)
        rules.append(Rules(matches=[m]))
    if action == Action.ALLOW and http:
        return None, http
    return rules, http


def _has_effective_rules(groups: list[Group]) -> bool:
    """Does any group fire at ztunnel? (Empty Matches are skipped there; a Group with no
    Rules matches everything.)"""
    for g in groups:
        if not g.rules:
            return True
        if all(any(m != Match() for m in r.matches) for r in g.rules):
            return True
    return False


def convert_authorization_policy(
    pol: AuthorizationPolicy, mesh: MeshConfig,
) -> tuple[Authorization | None, StatusMessage | None]:
    if pol.target_refs:
        return None, None
    dry_run = pol.annotations.get(DRY_RUN_ANNOTATION, "").lower() in ("true", "1", "t")
    if dry_run and not mesh.enable_dry_run:
        return None, StatusMessage(
            "AuthorizationPolicy", pol.namespace, pol.name, "UnsupportedValue",
            f'found policy "{pol.namespace}/{pol.name}" using dry-run annotation, but support '
            "for ambient dry-run authorizationPolicies isn't enabled",
            f'metadata.annotations["{DRY_RUN_ANNOTATION}"]')
    if pol.action not in ("ALLOW", "DENY"):
        return None, StatusMessage("AuthorizationPolicy", pol.namespace, pol.name,
                                   "UnsupportedValue",
                                   f"ztunnel does not support the {pol.action} action",
                                   "spec.action")
    if pol.selector is not None:
        scope = Scope.WORKLOAD_SELECTOR
    elif pol.namespace == mesh.root_namespace:
        scope = Scope.GLOBAL
    else:
        scope = Scope.NAMESPACE
    action = Action.ALLOW if pol.action == "ALLOW" else Action.DENY
    out = Authorization(name=pol.name, namespace=pol.namespace, scope=scope, action=action,
                        dry_run=dry_run)
    http: set[str] = set()
    for rule in pol.rules:
        rules, found = convert_rule(action, rule, pol.namespace)
        if rules is not None:
            out.groups.append(Group(rules=rules))
        http |= found
    if not http:
        return out, None
    if action == Action.DENY and not _has_effective_rules(out.groups):
        tail = _DENY_NO_EFFECT
    elif action == Action.DENY:
        tail = _DENY_MIXED
    else:
        tail = _ALLOW_DROPPED
    return out, StatusMessage("AuthorizationPolicy", pol.namespace, pol.name, "UnsupportedValue",
                              _HTTP_FMT.format(", ".join(sorted(http)), tail), "spec.rules")
