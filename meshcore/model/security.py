"""Typed Istio security CRDs: AuthorizationPolicy and PeerAuthentication, with their parsers.

Called through `meshcore.model.parse.parse_object`. Unlike the built-in kinds we implement the
whole `spec` schema here, so unknown fields and unknown enum values are rejected (as the CRD's
structural schema and Istio's validating webhook would), with the offending field's path.
Values are validated (ports, CIDRs, `when` values for L4 keys) but kept as the strings the user
wrote: the L4/L7 split and conversion belong to istiod_lite.translate.
Invariants: objects are frozen; lists are tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from meshcore.model._fields import Reader
from meshcore.model.core import ModelObject, parse_meta

AP_ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyTargetRef:
    kind: str
    name: str
    group: str = ""
    namespace: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    from_: tuple[Source, ...] = ()
    to: tuple[Operation, ...] = ()
    when: tuple[Condition, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AuthorizationPolicy(ModelObject):
    """`selector is None` means no workload selector (namespace- or mesh-wide)."""

    kind: ClassVar[str] = "AuthorizationPolicy"
    api_version: ClassVar[str] = "security.istio.io/v1"

    action: str = "ALLOW"
    selector: Mapping[str, str] | None = None
    target_refs: tuple[PolicyTargetRef, ...] = ()
    provider: str = ""
    rules: tuple[Rule, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class PeerAuthentication(ModelObject):
    kind: ClassVar[str] = "PeerAuthentication"
    api_version: ClassVar[str] = "security.istio.io/v1"

    mode: str = "UNSET"
    selector: Mapping[str, str] | None = None
    port_level_mtls: tuple[tuple[int, str], ...] = ()  # sorted by port


# CamelCase field → (dataclass attribute, value check) for Source / Operation.
_SOURCE_FIELDS = {
    "principals": "principals", "notPrincipals": "not_principals",
    "requestPrincipals": "request_principals", "notRequestPrincipals": "not_request_principals",
    "namespaces": "namespaces", "notNamespaces": "not_namespaces",
    "serviceAccounts": "service_accounts", "notServiceAccounts": "not_service_accounts",
    "ipBlocks": "ip_blocks", "notIpBlocks": "not_ip_blocks",
    "remoteIpBlocks": "remote_ip_blocks", "notRemoteIpBlocks": "not_remote_ip_blocks",
    "trustDomains": "trust_domains", "notTrustDomains": "not_trust_domains",
}
_OPERATION_FIELDS = {
    "hosts": "hosts", "notHosts": "not_hosts", "ports": "ports", "notPorts": "not_ports",
    "methods": "methods", "notMethods": "not_methods", "paths": "paths", "notPaths": "not_paths",
}
_CIDR_FIELDS = {"ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"}
_IP_WHEN_KEYS = {"source.ip", "destination.ip", "remote.ip"}


def _selector(spec: Mapping[str, Any], r: Reader) -> Mapping[str, str] | None:
    if spec.get("selector") is None:
        return None
    sel = r.obj(spec, "selector", "spec.selector")
    r.only(sel, {"matchLabels"}, "spec.selector")
    return r.labels(sel, "matchLabels", "spec.selector.matchLabels")


def _target_refs(spec: Mapping[str, Any], r: Reader) -> tuple[PolicyTargetRef, ...]:
    found = []
    single = [("spec.targetRef", spec["targetRef"])] if spec.get("targetRef") is not None else []
    for p, t in single + r.objs(spec, "targetRefs", "spec.targetRefs"):
        if not isinstance(t, Mapping):
            raise r.fail(p, "expected an object")
        r.only(t, {"group", "kind", "name", "namespace"}, p)
        found.append(PolicyTargetRef(kind=r.str_(t, "kind", f"{p}.kind", required=True),
                                     name=r.str_(t, "name", f"{p}.name", required=True),
                                     group=r.str_(t, "group", f"{p}.group"),
                                     namespace=r.str_(t, "namespace", f"{p}.namespace")))
    return tuple(found)


def _string_fields(d: Mapping[str, Any], fields: Mapping[str, str], path: str,
                   r: Reader) -> dict[str, tuple[str, ...]]:
    r.only(d, set(fields), path)
    out = {}
    for camel, attr in fields.items():
        values = r.strs(d, camel, f"{path}.{camel}")
        for i, v in enumerate(values):
            where = f"{path}.{camel}[{i}]"
            if not v:
                raise r.fail(where, "empty string is not allowed")
            if camel in _CIDR_FIELDS:
                r.cidr(v, where)
            elif camel in ("ports", "notPorts"):
                r.port(v, where)
        out[attr] = values
    return out


def _rule(p: str, rule: Mapping[str, Any], r: Reader) -> Rule:
    r.only(rule, {"from", "to", "when"}, p)
    sources = []
    for fp, f in r.objs(rule, "from", f"{p}.from"):
        r.only(f, {"source"}, fp)
        if f.get("source") is None:
            raise r.fail(f"{fp}.source", "required field is missing")
        src = r.obj(f, "source", f"{fp}.source")
        sources.append(Source(**_string_fields(src, _SOURCE_FIELDS, f"{fp}.source", r)))
    ops = []
    for tp, t in r.objs(rule, "to", f"{p}.to"):
        r.only(t, {"operation"}, tp)
        if t.get("operation") is None:
            raise r.fail(f"{tp}.operation", "required field is missing")
        op = r.obj(t, "operation", f"{tp}.operation")
        ops.append(Operation(**_string_fields(op, _OPERATION_FIELDS, f"{tp}.operation", r)))
    conds = []
    for wp, w in r.objs(rule, "when", f"{p}.when"):
        r.only(w, {"key", "values", "notValues"}, wp)
        key = r.str_(w, "key", f"{wp}.key", required=True)
        values = r.strs(w, "values", f"{wp}.values")
        not_values = r.strs(w, "notValues", f"{wp}.notValues")
        if not values and not not_values:
            raise r.fail(wp, "at least one of values or notValues must be set")
        for field, vs in (("values", values), ("notValues", not_values)):
            for i, v in enumerate(vs):
                if key in _IP_WHEN_KEYS:
                    r.cidr(v, f"{wp}.{field}[{i}]")
                elif key == "destination.port":
                    r.port(v, f"{wp}.{field}[{i}]")
        conds.append(Condition(key=key, values=values, not_values=not_values))
    return Rule(from_=tuple(sources), to=tuple(ops), when=tuple(conds))


def parse_authorization_policy(doc: Mapping[str, Any], r: Reader) -> AuthorizationPolicy:
    meta = parse_meta(doc, r, namespaced=True)
    spec = r.obj(doc, "spec", "spec")
    r.only(spec, {"selector", "targetRef", "targetRefs", "action", "provider", "rules"}, "spec")
    action = r.enum(spec, "action", "spec.action", AP_ACTIONS, "ALLOW")
    selector = _selector(spec, r)
    refs = _target_refs(spec, r)
    if selector is not None and refs:
        raise r.fail("spec.selector", "only one of selector or targetRefs can be set")
    provider = ""
    if spec.get("provider") is not None:
        prov = r.obj(spec, "provider", "spec.provider")
        r.only(prov, {"name"}, "spec.provider")
        provider = r.str_(prov, "name", "spec.provider.name")
    if action == "CUSTOM" and not provider:
        raise r.fail("spec.provider.name", "required when action is CUSTOM")
    if provider and action != "CUSTOM":
        raise r.fail("spec.provider", "only allowed when action is CUSTOM")
    rules = tuple(_rule(p, rule, r) for p, rule in r.objs(spec, "rules", "spec.rules"))
    return AuthorizationPolicy(meta=meta, action=action, selector=selector, target_refs=refs,
                               provider=provider, rules=rules)


def _mtls_mode(d: Mapping[str, Any], path: str, r: Reader) -> str:
    r.only(d, {"mode"}, path)
    return r.enum(d, "mode", f"{path}.mode", MTLS_MODES, "UNSET")


def parse_peer_authentication(doc: Mapping[str, Any], r: Reader) -> PeerAuthentication:
    meta = parse_meta(doc, r, namespaced=True)
    spec = r.obj(doc, "spec", "spec")
    r.only(spec, {"selector", "mtls", "portLevelMtls"}, "spec")
    selector = _selector(spec, r)
    mode = _mtls_mode(r.obj(spec, "mtls", "spec.mtls"), "spec.mtls", r)
    ports: dict[int, str] = {}
    plm = r.obj(spec, "portLevelMtls", "spec.portLevelMtls")
    for k, v in plm.items():
        p = f'spec.portLevelMtls["{k}"]'
        port = r.port(k, p)
        if not isinstance(v, Mapping):
            raise r.fail(p, "expected an object with a mode")
        ports[port] = _mtls_mode(v, p, r)
    if ports and not selector:
        raise r.fail("spec.portLevelMtls", "requires a workload selector (spec.selector)")
    return PeerAuthentication(meta=meta, mode=mode, selector=selector,
                              port_level_mtls=tuple(sorted(ports.items())))
