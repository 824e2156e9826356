"""What the waypoint does with a routed request: backend choice, filters, local answers. Pure.

Called by the waypoint's request handler: `route_request(table, request, port, rng)` returns
either a `LocalResponse` (404 no route, 500 invalid rule/backend, a redirect, an injected
abort) or a `Forward` plan (rewritten request, chosen backend, mirrors, response header
modifiers, timeouts, retry policy, fault delay) that the I/O layer carries out with
`waypoint.resilience`. With no applicable route (another port, another host) it forwards to
the Service itself (`default_forward`; also what the proxy does for Services without a
RouteConfiguration). `rng` is injected (`random.Random`-like: `random()`, `randrange()`)
so tests are deterministic.

Semantics (Gateway API HTTPRoute filters; docs/waypoint.md):
* backends: weighted random choice among the rule's backends (weight 0 never chosen); no
  backends, or all weights 0 ⇒ 500; a chosen backend with `invalid_reason` ⇒ 500 with it;
* filters run in order, rule filters then the chosen backend's; header modifiers remove,
  then set (replace, case-insensitive), then add (append another field line);
* RequestRedirect ⇒ 3xx with Location: scheme/hostname/path replaced when set; the port is
  the filter's, else the scheme's default (omitted) when the scheme changed, else the
  request's; the query is kept;
* URLRewrite: hostname replaces the authority (port dropped); ReplaceFullPath replaces the
  path, ReplacePrefixMatch replaces the matched PathPrefix (query kept);
* RequestMirror: the rewritten request also goes to the mirror backend with probability
  numerator/denominator (fire and forget; its response is ignored);
* fault: abort with its percentage ⇒ local answer; delay with its percentage ⇒ `Forward.delay`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from waypoint.routing.matching import Request, Selected, has_candidates, select
from waypoint.routing.types import (
    DEFAULT_RETRY,
    Backend,
    HeaderModifier,
    Mirror,
    PathKind,
    PathModifier,
    Redirect,
    ResponseHeaderModifier,
    RetryPolicy,
    RouteTable,
    UrlRewrite,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Rng(Protocol):
    def random(self) -> float: ...

    def randrange(self, stop: int, /) -> int: ...


@dataclasses.dataclass(frozen=True, slots=True)
class LocalResponse:
    """An answer the waypoint gives itself. `reason` is for logs and the body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    request: Request
    backend: Backend
    route: str  # "ns/name" of the HTTPRoute, for metrics and logs; "" for default routing
    rule_index: int  # -1 for default routing
    mirrors: tuple[tuple[Backend, Request], ...] = ()
    response_headers: tuple[HeaderModifier, ...] = ()
    request_timeout: float | None = None
    backend_timeout: float | None = None
    retry: RetryPolicy | None = None
    delay: float | None = None


def pick_weighted(backends: Sequence[Backend], rng: Rng) -> Backend | None:
    """A backend chosen with probability weight / total weight; None if the total is 0."""
    total = sum(b.weight for b in backends)
    if total <= 0:
        return None
    point = rng.randrange(total)
    for b in backends:
        if point < b.weight:
            return b
        point -= b.weight
    raise AssertionError("unreachable: point < total")


def modify_headers(headers: tuple[tuple[str, str], ...],
                   mod: HeaderModifier) -> tuple[tuple[str, str], ...]:
    """Remove, then set (replacing every field of that name), then add."""
    drop = set(mod.remove) | {n for n, _ in mod.set}
    out = [(n, v) for n, v in headers if n not in drop]
    return tuple(out) + mod.set + mod.add


def _new_path(path: str, matched_prefix: str | None, mod: PathModifier) -> str:
    if not mod.replace_prefix or matched_prefix is None:
        return mod.value
    rest = path[len(matched_prefix.rstrip("/")):]
    return (mod.value.rstrip("/") + rest) or "/"


def _with_path(request: Request, path: str) -> str:
    return f"{path}?{request.query}" if "?" in request.path else path


def redirect_response(request: Request, r: Redirect, matched_prefix: str | None) -> LocalResponse:
    scheme = r.scheme or request.scheme
    host = r.hostname or request.host
    path = _new_path(request.path_only, matched_prefix, r.path) if r.path else request.path_only
    if r.port:
        port = r.port
    elif r.scheme:
        port = _DEFAULT_PORTS.get(scheme, 0)
    else:
        a = request.authority
        tail = a.rsplit(":", 1)[1] if ":" in a and not a.endswith("]") else ""
        port = int(tail) if tail.isdigit() else _DEFAULT_PORTS.get(scheme, 0)
    netloc = host if port in (0, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    location = f"{scheme}://{netloc}{_with_path(request, path)}"
    return LocalResponse(r.status_code, f"redirect to {location}", (("location", location),))


def rewrite(request: Request, rw: UrlRewrite, matched_prefix: str | None) -> Request:
    authority = rw.hostname or request.authority
    headers = request.headers
    if rw.hostname:
        headers = tuple((n, rw.hostname if n == "host" else v) for n, v in headers)
    path = request.path
    if rw.path is not None:
        path = _with_path(request, _new_path(request.path_only, matched_prefix, rw.path))
    return dataclasses.replace(request, authority=authority, path=path, headers=headers)


def route_request(table: RouteTable, request: Request, port: int,
                  rng: Rng) -> LocalResponse | Forward:
    selected = select(table, request, port)
    if selected is not None:
        return plan(selected, request, rng)
    if has_candidates(table, request, port):
        return LocalResponse(404, f"no route in {table.name} matches {request.method} "
                             f"{request.path_only}")
    return default_forward(table, request, port)


def default_forward(table: RouteTable, request: Request, port: int) -> Forward:
    """No route applies (another port, another host): send to the Service itself, with
    Istio's default retry policy and no timeouts (as for a Service without routes)."""
    service = Backend(table.service_namespace, table.service_name, table.hostname, port)
    return Forward(request, service, "", -1, retry=DEFAULT_RETRY)


def plan(selected: Selected, request: Request, rng: Rng) -> LocalResponse | Forward:
    """Apply the selected rule: fault abort, backend choice, filters."""
    rule = selected.rule
    where = f"HTTPRoute {selected.route.key} rule {selected.rule_index}"
    if rule.invalid_reason:
        return LocalResponse(500, f"{where}: {rule.invalid_reason}")
    fault = rule.fault
    if fault and fault.abort_status and rng.random() * 100 < fault.abort_percent:
        return LocalResponse(fault.abort_status, f"{where}: fault injection abort")
    delay = None
    if fault and fault.delay is not None and rng.random() * 100 < fault.delay_percent:
        delay = fault.delay
    backend = None
    if rule.backends:
        backend = pick_weighted(rule.backends, rng)
    has_redirect = any(isinstance(f, Redirect) for f in rule.filters)
    if backend is None and not has_redirect:
        return LocalResponse(500, f"{where}: no backend to send to (none listed, or all "
                             "weights are 0)")
    if backend is not None and backend.invalid_reason and not has_redirect:
        return LocalResponse(500, f"{where}: {backend.invalid_reason}")
    m = selected.match
    prefix = m.path.value if m.path is not None and m.path.kind is PathKind.PREFIX else None
    mirrors: list[Backend] = []
    response: list[HeaderModifier] = []
    filters = rule.filters + (backend.filters if backend is not None else ())
    for f in filters:
        if isinstance(f, Redirect):
            return redirect_response(request, f, prefix)
        if isinstance(f, HeaderModifier):
            request = dataclasses.replace(request, headers=modify_headers(request.headers, f))
        elif isinstance(f, ResponseHeaderModifier):
            response.append(f.modifier)
        elif isinstance(f, UrlRewrite):
            request = rewrite(request, f, prefix)
        elif (isinstance(f, Mirror) and not f.backend.invalid_reason
              and rng.random() * f.denominator < f.numerator):
            mirrors.append(f.backend)
    assert backend is not None
    return Forward(request, backend, selected.route.key, selected.rule_index,
                   tuple((b, request) for b in mirrors),
                   tuple(response), rule.request_timeout, rule.backend_timeout, rule.retry, delay)
