"""L7 authorization at the waypoint for `why`: the waypoint's own evaluator on the folder's
translation, for one HTTP request given on the command line (`--method`, `--path`, ...).

Called by why.py (`_through_waypoint`) when the next hop goes through a waypoint and the state
has manifests (`MeshState.model`); hands back an `L7Result` that why.py combines with the L4
verdict and why_render.py prints. Pure.

Same code as the waypoint, not a re-implementation:
1. the resources are istiod-lite's translation of the folder (`MeshState.resources`, from
   `istiod_lite.translate.translate`: Address, Authorization and L7Authorization);
2. they go through `waypoint.state.WaypointStore.apply`, the updater the waypoint's xDS client
   uses (so `L7Policy.from_proto` is the gate; a `PolicyConfigError` is a NACK there, and the
   waypoint keeps its previous, here empty, policy set);
3. the tunnel is resolved like `waypoint.proxy.listener` does (`find_destination` on the
   waypoint's workload state, the CONNECT authority's IP and port) and the request attributes
   are the ones `waypoint.proxy.handler.RequestHandler.authorize` builds: peer identity = the
   client's (ztunnel presents the client's certificate), source and remote IP = the client IP
   (ztunnel's `forwarded: for=`), destination IP/port = the CONNECT authority;
4. `waypoint.policy.evaluate(attrs, applicable(policies, waypoint, hostname))`.
The deciding L7 rule index is mapped back to the AuthorizationPolicy's `spec.rules` index with
the translation's own `convert_rule` (it drops ALLOW rules the waypoint cannot evaluate).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

from ambientctl.debug.errors import DebugError
from ambientctl.debug.state import MeshState
from istiod_lite.translate import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL
from istiod_lite.translate.l7_policies import L7_AUTHORIZATION_TYPE_URL, convert_rule
from meshcore.identity import SpiffeId
from meshcore.model import AuthorizationPolicy
from meshcore.wds import IPAddress, ServiceDestination, find_destination
from meshcore.wds.store import to_update
from waypoint.policy import (
    DENIED_BODY,
    Decision,
    L7Policy,
    PolicyConfigError,
    RequestAttributes,
    applicable,
    evaluate,
)
from waypoint.state import WaypointState, WaypointStore

REQUEST_OPTIONS = "--method, --path, --header NAME=VALUE, --host"


class RequestOptionError(DebugError):
    """A request option (`--header`, `--method`, ...) is malformed."""


@dataclasses.dataclass(frozen=True, slots=True)
class HttpRequest:
    """The HTTP request to evaluate at the waypoint. `host` None: the Service's hostname (or
    the dialed `ip:port` for a pod), as a client naming the Service would send."""

    method: str = "GET"
    path: str = "/"
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_options(cls, method: str | None, path: str | None, host: str | None,
                     headers: Sequence[str] | None) -> HttpRequest | None:
        """The request the options describe; None when none was given (L4 only)."""
        if method is None and path is None and host is None and not headers:
            return None
        parsed = []
        for h in headers or ():
            name, sep, value = h.partition("=") if "=" in h else h.partition(":")
            if not sep or not name.strip():
                raise RequestOptionError(f"--header {h!r}: expected NAME=VALUE, e.g. "
                                         "--header x-user=alice")
            parsed.append((name.strip().lower(), value.strip()))
        path = path or "/"
        if not path.startswith("/"):
            raise RequestOptionError(f"--path {path!r}: a request path starts with /")
        return cls((method or "GET").upper(), path, host, tuple(parsed))


@dataclasses.dataclass(frozen=True, slots=True)
class L7Result:
    """The waypoint's decision on the request, and what it was made from."""

    waypoint: str  # "ns/name" the policies bind to
    hostname: str  # the Service's hostname ("" for pod-addressed traffic)
    attributes: RequestAttributes
    applicable: tuple[L7Policy, ...]
    decision: Decision
    spec_rule: int | None = None  # AuthorizationPolicy spec.rules index of `decision.rule`

    @property
    def policy_names(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.applicable)

    def decided_by(self) -> str:
        """The deciding policy and rule, or the default that decided."""
        d = self.decision
        if d.policy is None:
            if not self.applicable:
                return "no L7 policy applies at the waypoint"
            return f"no L7 policy matched ({d.reason})"
        action = "DENY" if not d.allowed else "ALLOW"
        rule = f" spec.rules[{self.spec_rule}]" if self.spec_rule is not None else ""
        return f"L7 {action} AuthorizationPolicy {d.policy}{rule} at waypoint {self.waypoint}"

    def summary(self) -> str:
        d = self.decision
        verdict = "ALLOW" if d.allowed else f"DENY (HTTP 403 {DENIED_BODY!r})"
        return f"{verdict}: {self.decided_by()}"


class WaypointRefusal(Exception):
    """The waypoint would not serve the request at all (message says why)."""


def waypoint_state(state: MeshState) -> WaypointState:
    """The state the waypoint's xDS client would hold for this translation (policies left out,
    and the rejection named, when the waypoint would NACK them)."""
    store = WaypointStore()
    res = state.resources
    store.apply(ADDRESS_TYPE_URL, [to_update(n, m) for n, m in sorted(res.addresses.items())])
    store.apply(AUTHORIZATION_TYPE_URL,
                [to_update(n, m) for n, m in sorted(res.authorizations.items())])
    try:
        store.apply(L7_AUTHORIZATION_TYPE_URL, [
            to_update(n, m) for n, m in sorted(res.l7_authorizations.items())])
    except PolicyConfigError as e:
        raise WaypointRefusal(f"the waypoint rejects (NACKs) its L7 policy config: {e}; it "
                              "keeps its previous policies, which a folder cannot show") from e
    return store.state


def applicable_names(state: MeshState, waypoint: str, hostname: str) -> tuple[str, ...]:
    """Keys of the L7 policies the waypoint applies to traffic for `hostname` ("" for a pod)."""
    try:
        policies = waypoint_state(state).policies.values()
    except WaypointRefusal:
        return ()
    return tuple(p.key for p in applicable(policies, waypoint, hostname))


def _authority(authority: str) -> tuple[IPAddress, int]:
    host, _, port = authority.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    return ip, int(port)


def spec_rule(state: MeshState, key: str, index: int | None) -> int | None:
    """The AuthorizationPolicy `spec.rules` index of rule `index` of L7 policy `key`."""
    ns, _, name = key.partition("/")
    pol = None if state.model is None else state.model.get("AuthorizationPolicy", ns, name)
    if index is None or not isinstance(pol, AuthorizationPolicy):
        return None
    deny = pol.action == "DENY"
    kept = [i for i, rule in enumerate(pol.rules) if convert_rule(rule, i, deny, []) is not None]
    return kept[index] if 0 <= index < len(kept) else None


def evaluate_at_waypoint(state: MeshState, waypoint: str, client: SpiffeId, client_ip: IPAddress,
                         authority: str, request: HttpRequest) -> L7Result:
    """Decide `request` as waypoint `waypoint` ("ns/name") would for a tunnel from `client`
    (at `client_ip`) with CONNECT `authority`; WaypointRefusal when it would not serve it."""
    wstate = waypoint_state(state)
    ip, port = _authority(authority)
    dest = find_destination(wstate.wds, ip, port)  # as waypoint.proxy.listener resolves it
    if dest is None:
        raise WaypointRefusal(f"{authority} is neither a Service VIP nor a workload the "
                              "waypoint knows")
    hostname = ""
    if isinstance(dest, ServiceDestination):
        if dest.service.port(port) is None:
            raise WaypointRefusal(f"Service {dest.service.key} has no port {port}")
        hostname = dest.service.hostname
    host = request.host if request.host is not None else (hostname or authority)
    attrs = RequestAttributes(request.method, request.path, host, request.headers,
                              source_identity=client, destination_port=port,
                              source_ip=client_ip, remote_ip=client_ip, destination_ip=ip)
    policies = tuple(applicable(wstate.policies.values(), waypoint, hostname))
    decision = evaluate(attrs, policies)
    return L7Result(waypoint, hostname, attrs, policies, decision,
                    spec_rule(state, decision.policy or "", decision.rule))


def request_dict(attrs: RequestAttributes) -> dict[str, object]:
    return {"method": attrs.method, "path": attrs.path, "host": attrs.host,
            "headers": [list(h) for h in attrs.headers],
            "source_principal": attrs.principal,
            "source_ip": str(attrs.source_ip) if attrs.source_ip else None,
            "destination_ip": str(attrs.destination_ip) if attrs.destination_ip else None,
            "destination_port": attrs.destination_port}


def to_dict(result: L7Result) -> dict[str, object]:
    d = result.decision
    return {"evaluated": True, "waypoint": result.waypoint, "service": result.hostname or None,
            "request": request_dict(result.attributes), "allowed": d.allowed,
            "reason": d.reason, "policy": d.policy, "rule": d.rule,
            "spec_rule": result.spec_rule, "decided_by": result.decided_by(),
            "applicable": [{"name": p.key, "action": p.action.value, "dry_run": p.dry_run}
                           for p in result.applicable],
            "dry_run": list(d.dry_run)}
