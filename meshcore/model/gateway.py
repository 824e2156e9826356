"""Typed Gateway API objects: Gateway (waypoints) and HTTPRoute, with their parsers.

Called through `meshcore.model.parse.parse_object`. istiod_lite uses Gateway to find waypoints
(class `istio-waypoint`, label `istio.io/waypoint-for`, `status.addresses`); the waypoint
route work uses HTTPRoute. HTTPRoute keeps typed matches, filters and backendRefs with the
CRD's defaults applied (PathPrefix "/", weight 1, kind Service), plus each filter's validated
config as a frozen mapping, so a rule can be evaluated or written back out (`thaw`).
Invariants: objects are frozen; `raw_spec` is the frozen spec exactly as written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from meshcore.model._fields import Reader, empty_map, freeze
from meshcore.model.core import ModelObject, parse_meta

WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
WAYPOINT_FOR_VALUES = ("service", "workload", "all", "none")


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    name: str
    port: int
    protocol: str
    hostname: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Gateway(ModelObject):
    kind: ClassVar[str] = "Gateway"
    api_version: ClassVar[str] = "gateway.networking.k8s.io/v1"

    gateway_class_name: str = ""
    listeners: tuple[Listener, ...] = ()
    status_addresses: tuple[tuple[str, str], ...] = ()  # (type, value); type "" = IPAddress
    raw_spec: Mapping[str, Any] = empty_map()

    @property
    def is_waypoint(self) -> bool:
        return self.gateway_class_name == WAYPOINT_CLASS

    @property
    def waypoint_for(self) -> str:
        """Which traffic the waypoint takes: service (default), workload, all or none."""
        return self.meta.labels.get(WAYPOINT_FOR_LABEL, "service")


def parse_gateway(doc: Mapping[str, Any], r: Reader) -> Gateway:
    meta = parse_meta(doc, r, namespaced=True)
    spec = r.obj(doc, "spec", "spec")
    cls = r.str_(spec, "gatewayClassName", "spec.gatewayClassName", required=True)
    listeners = []
    names: set[str] = set()
    for p, ls in r.objs(spec, "listeners", "spec.listeners"):
        name = r.str_(ls, "name", f"{p}.name", required=True)
        if name in names:
            raise r.fail(f"{p}.name", f'duplicate listener name "{name}"')
        names.add(name)
        port = r.int_(ls, "port", f"{p}.port", lo=1, hi=65535)
        if port is None:
            raise r.fail(f"{p}.port", "required field is missing")
        listeners.append(Listener(name=name, port=port,
                                  protocol=r.str_(ls, "protocol", f"{p}.protocol", required=True),
                                  hostname=r.str_(ls, "hostname", f"{p}.hostname")))
    status = r.obj(doc, "status", "status")
    addrs = []
    for p, a in r.objs(status, "addresses", "status.addresses"):
        atype = r.str_(a, "type", f"{p}.type", default="IPAddress")
        value = r.str_(a, "value", f"{p}.value", required=True)
        if atype == "IPAddress":
            value = r.ip(value, f"{p}.value")
        addrs.append((atype, value))
    wf = meta.labels.get(WAYPOINT_FOR_LABEL)
    if wf is not None and wf not in WAYPOINT_FOR_VALUES:
        raise r.fail(f'metadata.labels["{WAYPOINT_FOR_LABEL}"]',
                     f'unknown value "{wf}" (expected {", ".join(WAYPOINT_FOR_VALUES)})')
    return Gateway(meta=meta, gateway_class_name=cls, listeners=tuple(listeners),
                   status_addresses=tuple(addrs), raw_spec=freeze(spec))


# -- HTTPRoute --------------------------------------------------------------------------------

PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
HEADER_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
FILTER_TYPES = {  # filter type → the key holding its config
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
}


@dataclasses.dataclass(frozen=True, slots=True)
class ParentRef:
    name: str
    kind: str = "Gateway"
    group: str = "gateway.networking.k8s.io"
    namespace: str = ""
    section_name: str = ""
    port: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PathMatch:
    type: str = "PathPrefix"
    value: str = "/"


@dataclasses.dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query-parameter match."""

    name: str
    value: str
    type: str = "Exact"


@dataclasses.dataclass(frozen=True, slots=True)
class HTTPRouteMatch:
    path: PathMatch | None = PathMatch()
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class HTTPRouteFilter:
    type: str
    config: Mapping[str, Any] = empty_map()  # the value under the type's key


@dataclasses.dataclass(frozen=True, slots=True)
class BackendRef:
    name: str
    port: int | None = None
    kind: str = "Service"
    group: str = ""
    namespace: str = ""
    weight: int = 1
    filters: tuple[HTTPRouteFilter, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class HTTPRouteRule:
    name: str = ""
    matches: tuple[HTTPRouteMatch, ...] = (HTTPRouteMatch(),)
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    timeouts: Mapping[str, str] = empty_map()  # request / backendRequest durations


@dataclasses.dataclass(frozen=True, slots=True)
class HTTPRoute(ModelObject):
    kind: ClassVar[str] = "HTTPRoute"
    api_version: ClassVar[str] = "gateway.networking.k8s.io/v1"

    parent_refs: tuple[ParentRef, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = ()
    raw_spec: Mapping[str, Any] = empty_map()


def _value_matches(d: Mapping[str, Any], key: str, path: str, r: Reader) -> tuple[ValueMatch, ...]:
    out = []
    for p, m in r.objs(d, key, path):
        r.only(m, {"type", "name", "value"}, p)
        out.append(ValueMatch(name=r.str_(m, "name", f"{p}.name", required=True),
                              value=r.str_(m, "value", f"{p}.value"),
                              type=r.enum(m, "type", f"{p}.type", HEADER_TYPES, "Exact")))
    return tuple(out)


def _filters(d: Mapping[str, Any], path: str, r: Reader) -> tuple[HTTPRouteFilter, ...]:
    out = []
    for p, f in r.objs(d, "filters", path):
        ftype = r.enum(f, "type", f"{p}.type", tuple(FILTER_TYPES), "")
        key = FILTER_TYPES[ftype]
        r.only(f, {"type", key}, p)
        config = r.obj(f, key, f"{p}.{key}")
        if not config and ftype != "CORS":
            raise r.fail(f"{p}.{key}", f"required when type is {ftype}")
        out.append(HTTPRouteFilter(type=ftype, config=freeze(config)))
    return tuple(out)


def _backend_refs(rule: Mapping[str, Any], path: str, r: Reader) -> tuple[BackendRef, ...]:
    out = []
    for p, b in r.objs(rule, "backendRefs", path):
        r.only(b, {"group", "kind", "name", "namespace", "port", "weight", "filters"}, p)
        kind = r.str_(b, "kind", f"{p}.kind", default="Service")
        port = r.int_(b, "port", f"{p}.port", lo=1, hi=65535)
        if kind == "Service" and port is None:
            raise r.fail(f"{p}.port", "required when referring to a Service")
        out.append(BackendRef(name=r.str_(b, "name", f"{p}.name", required=True), port=port,
                              kind=kind, group=r.str_(b, "group", f"{p}.group"),
                              namespace=r.str_(b, "namespace", f"{p}.namespace"),
                              weight=r.int_(b, "weight", f"{p}.weight", default=1, lo=0,
                                            hi=1_000_000) or 0,
                              filters=_filters(b, f"{p}.filters", r)))
    return tuple(out)


def _route_rule(p: str, rule: Mapping[str, Any], r: Reader) -> HTTPRouteRule:
    r.only(rule, {"name", "matches", "filters", "backendRefs", "timeouts", "retry",
                  "sessionPersistence"}, p)
    matches = []
    for mp, m in r.objs(rule, "matches", f"{p}.matches"):
        r.only(m, {"path", "headers", "queryParams", "method"}, mp)
        path: PathMatch | None = PathMatch()
        if m.get("path") is not None:
            pm = r.obj(m, "path", f"{mp}.path")
            r.only(pm, {"type", "value"}, f"{mp}.path")
            path = PathMatch(type=r.enum(pm, "type", f"{mp}.path.type", PATH_TYPES, "PathPrefix"),
                             value=r.str_(pm, "value", f"{mp}.path.value", default="/"))
            if path.type != "RegularExpression" and not path.value.startswith("/"):
                raise r.fail(f"{mp}.path.value", 'must start with "/"')
        method = ""
        if m.get("method") is not None:
            method = r.enum(m, "method", f"{mp}.method", METHODS, "")
        matches.append(HTTPRouteMatch(
            path=path, headers=_value_matches(m, "headers", f"{mp}.headers", r),
            query_params=_value_matches(m, "queryParams", f"{mp}.queryParams", r),
            method=method))
    timeouts = r.obj(rule, "timeouts", f"{p}.timeouts")
    r.only(timeouts, {"request", "backendRequest"}, f"{p}.timeouts")
    t = {k: r.str_(timeouts, k, f"{p}.timeouts.{k}") for k in timeouts}
    return HTTPRouteRule(name=r.str_(rule, "name", f"{p}.name"),
                         matches=tuple(matches) or (HTTPRouteMatch(),),
                         filters=_filters(rule, f"{p}.filters", r),
                         backend_refs=_backend_refs(rule, f"{p}.backendRefs", r),
                         timeouts=MappingProxyType(t))


def parse_http_route(doc: Mapping[str, Any], r: Reader) -> HTTPRoute:
    meta = parse_meta(doc, r, namespaced=True)
    spec = r.obj(doc, "spec", "spec")
    r.only(spec, {"parentRefs", "hostnames", "rules"}, "spec")
    parents = []
    for p, ref in r.objs(spec, "parentRefs", "spec.parentRefs"):
        r.only(ref, {"group", "kind", "namespace", "name", "sectionName", "port"}, p)
        parents.append(ParentRef(
            name=r.str_(ref, "name", f"{p}.name", required=True),
            kind=r.str_(ref, "kind", f"{p}.kind", default="Gateway"),
            group=r.str_(ref, "group", f"{p}.group", default="gateway.networking.k8s.io"),
            namespace=r.str_(ref, "namespace", f"{p}.namespace"),
            section_name=r.str_(ref, "sectionName", f"{p}.sectionName"),
            port=r.int_(ref, "port", f"{p}.port", lo=1, hi=65535)))
    rules = tuple(_route_rule(p, rule, r) for p, rule in r.objs(spec, "rules", "spec.rules"))
    return HTTPRoute(meta=meta, parent_refs=tuple(parents),
                     hostnames=r.strs(spec, "hostnames", "spec.hostnames"),
                     rules=rules, raw_spec=freeze(spec))
