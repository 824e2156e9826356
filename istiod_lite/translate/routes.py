"""HTTPRoute → `ambient.waypoint.v1.RouteConfiguration`, one per Service behind a waypoint.

Called by translator.py (`translate_routes(model, mesh)`); hands `{resource name: message}`
for the type URL `ROUTE_CONFIGURATION_TYPE_URL` plus status messages. Pure and deterministic
(routes in (namespace, name) order; the proxy applies Gateway API precedence itself, from the
creation timestamps carried here: waypoint/routing).

Which routes attach (AMBIENT-INTERNALS §6.4, docs/waypoint.md):
* parentRef `kind: Service` (group "" or core), same namespace as the route (GAMMA producer
  routes), optional `port`: applies to that Service when it is bound to a waypoint;
* parentRef `kind: Gateway` naming an `istio-waypoint` Gateway: applies to every Service bound
  to that waypoint, filtered by the route's hostnames at the proxy;
* consumer routes (route namespace ≠ Service namespace) and parents that are not ours are
  skipped (the former with an `UnsupportedValue` status).
Resource name: `<service namespace>/<service hostname>`, the Service's own Address name.

Problems never drop a route silently (Gateway API asks for errors in the data path):
a backendRef to a missing Service, a port the Service lacks, another kind, or another namespace
(ReferenceGrant is not modelled) gets `Backend.invalid_reason`; ExtensionRef / CORS filters
make the rule `invalid_reason` (500 at the proxy); each also yields a status message.
Retries come from the rule's `retry` field (Gateway API, experimental) and fault injection from
the route annotation `FAULT_ANNOTATION` (Gateway API has no fault filter).

`route_statuses(model, mesh)` gives the Gateway API status verdict per route and parentRef
(`RouteStatus`), for the Kubernetes source to write on the route (docs/kubernetes-source.md):
only parents that are ours (Services; Gateways of class istio-waypoint) get one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from istiod_lite.translate.mesh import MeshConfig, StatusMessage, service_hostname
from istiod_lite.translate.waypoints import Waypoint, bind, find_waypoints
from meshcore.model import ClusterModel, HTTPRoute, Service
from meshcore.model.gateway import BackendRef, HTTPRouteFilter, HTTPRouteMatch, HTTPRouteRule
from meshcore.protos.ambient.waypoint import v1 as pb

ROUTE_CONFIGURATION_TYPE_URL = "type.googleapis.com/ambient.waypoint.v1.RouteConfiguration"
FAULT_ANNOTATION = "waypoint.ambient-py.io/fault"
# Gateway API Duration: up to four <number><unit> parts, units h, m, s, ms.
_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_PATH_TYPES = {"PathPrefix": pb.PathMatchType.PATH_PREFIX, "Exact": pb.PathMatchType.EXACT,
               "RegularExpression": pb.PathMatchType.REGULAR_EXPRESSION}
GATEWAY_GROUP = "gateway.networking.k8s.io"
# Istio's retry_on when an HTTPRoute sets `retry` (conversion keeps its default conditions).
RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled",
            "retriable-status-codes")


class Notes:
    """Status messages for one route."""

    def __init__(self, route: HTTPRoute, out: list[StatusMessage]) -> None:
        self.route = route
        self.out = out

    def __call__(self, reason: str, message: str, field: str) -> None:
        self.out.append(StatusMessage("HTTPRoute", self.route.namespace, self.route.name,
                                      reason, message, field))


def parse_duration_ms(text: str) -> int | None:
    """Milliseconds of a Gateway API duration ("1h30m", "500ms", "0s"), None if malformed."""
    if not _DURATION.match(text):
        return None
    return sum(int(n) * _UNIT_MS[u] for n, u in _DURATION_PART.findall(text))


def _duration(text: str, note: Notes, field: str) -> pb.Duration | None:
    ms = parse_duration_ms(text)
    if ms is None:
        note("UnsupportedValue", f'invalid duration "{text}" (expected e.g. "10s", "500ms")',
             field)
        return None
    return pb.Duration(millis=ms)


def _match(m: HTTPRouteMatch) -> pb.RouteMatch:
    out = pb.RouteMatch(method=m.method)
    if m.path is not None:
        out.path = pb.PathMatch(type=_PATH_TYPES[m.path.type], value=m.path.value)
    for src, dst in ((m.headers, out.headers), (m.query_params, out.query_params)):
        for v in src:
            dst.append(pb.ValueMatch(
                name=v.name, value=v.value,
                type=(pb.ValueMatchType.VALUE_REGULAR_EXPRESSION
                      if v.type == "RegularExpression" else pb.ValueMatchType.VALUE_EXACT)))
    return out


def _backend(ref: BackendRef | Mapping[str, Any], route: HTTPRoute, model: ClusterModel,
             mesh: MeshConfig, note: Notes, field: str) -> pb.Backend:
    if isinstance(ref, BackendRef):
        kind, group, name, ns, port = ref.kind, ref.group, ref.name, ref.namespace, ref.port
        weight = ref.weight
    else:  # a mirror's backendRef, still raw (malformed values raise, see _filters)
        kind, group = _str(ref, "kind", "Service"), _str(ref, "group")
        name, ns = _str(ref, "name"), _str(ref, "namespace")
        port, weight = _int(ref, "port", 0, 0, 65535), 1
    ns, port = ns or route.namespace, port or 0
    out = pb.Backend(namespace=ns, name=name, hostname=service_hostname(mesh, ns, name),
                     port=port, weight=weight)
    reason = ""
    if kind != "Service" or group not in ("", "core"):
        reason = f"backendRef kind {group or 'core'}/{kind} is not supported (only Service)"
        note("InvalidKind", reason, field)
    elif ns != route.namespace:
        reason = (f"backendRef to Service {ns}/{name} in another namespace needs a "
                  "ReferenceGrant, which ambient-py does not support")
        note("RefNotPermitted", reason, field)
    else:
        svc = model.get("Service", ns, name)
        if not isinstance(svc, Service):
            reason = f"backendRef Service {ns}/{name} not found"
            note("BackendNotFound", reason, field)
        elif not any(p.port == port for p in svc.ports):
            reason = f"backendRef Service {ns}/{name} has no port {port}"
            note("BackendNotFound", reason, field)
    out.invalid_reason = reason
    return out


def _str(d: Mapping[str, Any], key: str, default: str = "") -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise TypeError(f"{key} must be a string, got {v!r}")
    return v


def _int(d: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _path_modifier(cfg: Mapping[str, Any]) -> pb.PathModifier | None:
    path = cfg.get("path")
    if not path:
        return None
    if _str(path, "type") == "ReplacePrefixMatch":
        return pb.PathModifier(type=pb.PathModifierType.REPLACE_PREFIX_MATCH,
                               value=_str(path, "replacePrefixMatch", "/"))
    if path["type"] != "ReplaceFullPath":
        raise ValueError(f"unknown path type {path['type']!r}")
    return pb.PathModifier(type=pb.PathModifierType.REPLACE_FULL_PATH,
                           value=_str(path, "replaceFullPath", "/"))


def _header_modifier(cfg: Mapping[str, Any]) -> pb.HeaderModifier:
    def headers(key: str) -> list[pb.Header]:
        out = [pb.Header(name=_str(h, "name"), value=_str(h, "value")) for h in cfg.get(key, ())]
        if not all(h.name for h in out):
            raise ValueError(f"every {key} entry needs a name")
        return out
    remove = [v for v in cfg.get("remove", ())]
    if not all(isinstance(v, str) for v in remove):
        raise TypeError("remove must list header names")
    return pb.HeaderModifier(set=headers("set"), add=headers("add"), remove=remove)


def _filter(f: HTTPRouteFilter, route: HTTPRoute, model: ClusterModel, mesh: MeshConfig,
            note: Notes, where: str) -> pb.Filter | None:
    """One converted filter; None for a type we do not implement. Raises on malformed config
    (the model keeps filter configs unvalidated)."""
    cfg = f.config
    if f.type == "RequestHeaderModifier":
        return pb.Filter(request_header_modifier=_header_modifier(cfg))
    if f.type == "ResponseHeaderModifier":
        return pb.Filter(response_header_modifier=_header_modifier(cfg))
    if f.type == "RequestRedirect":
        redirect = pb.Redirect(scheme=_str(cfg, "scheme"), hostname=_str(cfg, "hostname"),
                               port=_int(cfg, "port", 0, 0, 65535),
                               status_code=_int(cfg, "statusCode", 302, 300, 308))
        if (pm := _path_modifier(cfg)) is not None:
            redirect.path = pm
        return pb.Filter(request_redirect=redirect)
    if f.type == "URLRewrite":
        rewrite = pb.UrlRewrite(hostname=_str(cfg, "hostname"))
        if (pm := _path_modifier(cfg)) is not None:
            rewrite.path = pm
        return pb.Filter(url_rewrite=rewrite)
    if f.type == "RequestMirror":
        num, den = 100, 100
        if "percent" in cfg:
            num = _int(cfg, "percent", 100, 0, 100)
        elif "fraction" in cfg:
            den = _int(cfg["fraction"], "denominator", 100, 1, 1_000_000)
            num = _int(cfg["fraction"], "numerator", 0, 0, den)
        backend = _backend(cfg["backendRef"], route, model, mesh, note,
                           f"{where}.requestMirror.backendRef")
        return pb.Filter(request_mirror=pb.Mirror(backend=backend, numerator=num,
                                                  denominator=den))
    return None  # ExtensionRef, CORS


def _filters(filters: tuple[HTTPRouteFilter, ...], route: HTTPRoute, model: ClusterModel,
             mesh: MeshConfig, note: Notes, field: str) -> tuple[list[pb.Filter], str]:
    """The converted filters and, for a filter we cannot apply, the reason the rule fails."""
    out: list[pb.Filter] = []
    invalid = ""
    for i, f in enumerate(filters):
        where = f"{field}[{i}]"
        try:
            converted = _filter(f, route, model, mesh, note, where)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            invalid = invalid or f"invalid {f.type} filter ({e})"
            note("UnsupportedValue", f"invalid {f.type} filter: {e}; matching requests get "
                 "HTTP 500", where)
            continue
        if converted is None:
            invalid = invalid or f"filter {f.type} is not supported by ambient-py waypoints"
            note("UnsupportedValue", f"filter type {f.type} is not supported; matching "
                 "requests get HTTP 500", where)
            continue
        out.append(converted)
    return out, invalid


def _retry(raw: Mapping[str, Any], note: Notes, field: str) -> pb.RetryPolicy | None:
    if not raw:
        return None
    try:
        codes = list(raw.get("codes", ()))
        if not all(isinstance(c, int) and 400 <= c <= 599 for c in codes):
            raise ValueError(f"codes must be HTTP statuses 400..599, got {codes!r}")
        out = pb.RetryPolicy(attempts=_int(raw, "attempts", 2, 0, 1000),
                             retry_on=list(RETRY_ON), retriable_status_codes=codes or [503])
        backoff = _duration(_str(raw, "backoff"), note, f"{field}.backoff") \
            if raw.get("backoff") else None
    except (TypeError, ValueError) as e:
        note("UnsupportedValue", f"invalid retry ({e}); Istio's default retry policy applies",
             field)
        return None
    if backoff is not None:
        out.backoff_base = backoff
    return out


def _fault(route: HTTPRoute, note: Notes) -> pb.Fault | None:
    text = route.annotations.get(FAULT_ANNOTATION)
    if text is None:
        return None
    field = f'metadata.annotations["{FAULT_ANNOTATION}"]'
    try:
        doc = yaml.safe_load(text)
        out = pb.Fault()
        delay, abort = doc.get("delay"), doc.get("abort")
        if delay:
            d = _duration(str(delay["fixedDelay"]), note, field)
            if d is None:
                return None
            out.delay = pb.FaultDelay(fixed_delay=d, percentage=_percent(delay))
        if abort:
            status = int(abort["httpStatus"])
            if not 200 <= status <= 599:
                raise ValueError(f"httpStatus {status} is not an HTTP status")
            out.abort = pb.FaultAbort(http_status=status, percentage=_percent(abort))
        if not delay and not abort:
            raise ValueError("neither delay nor abort is set")
        return out
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as e:
        note("UnsupportedValue", f"invalid fault annotation ({e}); expected "
             '{"delay": {"fixedDelay": "5s", "percentage": {"value": 10}}, '
             '"abort": {"httpStatus": 503, "percentage": {"value": 5}}}', field)
        return None


def _percent(d: Mapping[str, Any]) -> float:
    p = d.get("percentage", {"value": 100})
    value = float(p["value"] if isinstance(p, Mapping) else p)
    if not 0 <= value <= 100:
        raise ValueError(f"percentage {value} is outside 0..100")
    return value


def convert_rule(rule: HTTPRouteRule, index: int, route: HTTPRoute, model: ClusterModel,
                 mesh: MeshConfig, note: Notes, fault: pb.Fault | None) -> pb.RouteRule:
    field = f"spec.rules[{index}]"
    out = pb.RouteRule(name=rule.name, matches=[_match(m) for m in rule.matches])
    out.filters, out.invalid_reason = _filters(rule.filters, route, model, mesh, note,
                                               f"{field}.filters")
    for j, ref in enumerate(rule.backend_refs):
        b = _backend(ref, route, model, mesh, note, f"{field}.backendRefs[{j}]")
        b.filters, invalid = _filters(ref.filters, route, model, mesh, note,
                                      f"{field}.backendRefs[{j}].filters")
        b.invalid_reason = b.invalid_reason or invalid
        out.backends.append(b)
    timeouts = pb.Timeouts()
    for key, attr in (("request", "request"), ("backendRequest", "backend_request")):
        if key in rule.timeouts:
            d = _duration(rule.timeouts[key], note, f"{field}.timeouts.{key}")
            if d is not None:
                setattr(timeouts, attr, d)
    if rule.timeouts:
        out.timeouts = timeouts
    raw_rules = route.raw_spec.get("rules", ())
    raw = raw_rules[index] if index < len(raw_rules) else {}
    if (retry := _retry(raw.get("retry") or {}, note, f"{field}.retry")) is not None:
        out.retry = retry
    if fault is not None:
        out.fault = fault
    return out


def _route_parents(route: HTTPRoute, waypoints: Mapping[tuple[str, str], Waypoint],
                   note: Notes) -> list[tuple[int, tuple[str, str], int]]:
    parents = []
    for i, ref in enumerate(route.parent_refs):
        ns = ref.namespace or route.namespace
        if ref.kind == "Service" and ref.group in ("", "core"):
            if ns != route.namespace:
                note("UnsupportedValue", f"consumer route for Service {ns}/{ref.name} (another "
                     "namespace) is not supported; ignored", f"spec.parentRefs[{i}]")
                continue
            parents.append((pb.ParentKind.SERVICE, (ns, ref.name), ref.port or 0))
        elif ref.kind == "Gateway" and ref.group == GATEWAY_GROUP and (ns, ref.name) in waypoints:
            parents.append((pb.ParentKind.GATEWAY, (ns, ref.name), ref.port or 0))
    return parents


def translate_routes(model: ClusterModel, mesh: MeshConfig | None = None,
                     ) -> tuple[dict[str, pb.RouteConfiguration], list[StatusMessage]]:
    """RouteConfigurations keyed by `<service ns>/<hostname>`, and status messages."""
    mesh = mesh or MeshConfig()
    statuses: list[StatusMessage] = []
    waypoints = find_waypoints(model, mesh)
    by_service: dict[tuple[str, str], list[pb.HttpRoute]] = {}
    by_gateway: dict[tuple[str, str], list[pb.HttpRoute]] = {}
    for route in model.sorted("HTTPRoute"):
        assert isinstance(route, HTTPRoute)
        note = Notes(route, statuses)
        parents = _route_parents(route, waypoints, note)
        if not parents:
            continue
        fault = _fault(route, note)
        rules = [convert_rule(r, i, route, model, mesh, note, fault)
                 for i, r in enumerate(route.rules)]
        for kind, key, port in parents:
            msg = pb.HttpRoute(namespace=route.namespace, name=route.name,
                               creation_timestamp=route.meta.creation_timestamp,
                               parent_kind=kind, port=port, rules=rules)
            if kind == pb.ParentKind.GATEWAY:
                msg.hostnames = list(route.hostnames)
                by_gateway.setdefault(key, []).append(msg)
            else:
                by_service.setdefault(key, []).append(msg)
    out: dict[str, pb.RouteConfiguration] = {}
    for svc in model.services:
        routes = by_service.pop((svc.namespace, svc.name), [])
        if svc.type == "ExternalName":
            continue
        wp, _ = bind("Service", svc.meta, "service", model, waypoints)
        if wp is None:
            statuses.extend(StatusMessage("HTTPRoute", r.namespace, r.name, "NoWaypoint",
                                          f"Service {svc.namespace}/{svc.name} is not bound to "
                                          "a waypoint; the route has no effect", "spec.parentRefs")
                            for r in routes)
            continue
        routes = routes + by_gateway.get((wp.namespace, wp.name), [])
        if not routes:
            continue
        hostname = service_hostname(mesh, svc.namespace, svc.name)
        name = f"{svc.namespace}/{hostname}"
        out[name] = pb.RouteConfiguration(name=name, waypoint=f"{wp.namespace}/{wp.name}",
                                          service_namespace=svc.namespace,
                                          service_name=svc.name, hostname=hostname,
                                          routes=routes)
    for (ns, name), routes in sorted(by_service.items()):
        statuses.extend(StatusMessage("HTTPRoute", r.namespace, r.name, "BackendNotFound",
                                      f"parent Service {ns}/{name} not found", "spec.parentRefs")
                        for r in routes)
    return out, statuses
