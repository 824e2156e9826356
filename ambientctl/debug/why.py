"""`ambientctl why SRC DST:PORT`: would the mesh allow this connection, and which policy decides.

Called by the `why` command (`why_cli`) and by tests. Pure over a `MeshState` (state.py). It
follows the connection the way the data path does, with the data path's own code:
1. The source: a pod (`ns/name`) or an IP. It is *captured* when its Workload speaks HBONE
   (the node agent redirected it); only then does a source ztunnel handle its traffic.
2. Captured source: `ztunnel.proxy.next_hop.build_request` (ztunnel's outbound decision)
   chooses passthrough, direct HBONE or the waypoint. Uncaptured source: the client's own
   stack resolves a VIP (kube-proxy) to an endpoint with `meshcore.wds.select_endpoint`, and
   the bytes arrive in plaintext.
3. Through a waypoint: the waypoint evaluates its L7 policies per HTTP request; given one
   (`HttpRequest`: `--method`, `--path`, ...) why_l7.py evaluates them with the waypoint's own
   evaluator, else they are listed. An L7 deny ends there (403 from the waypoint); otherwise
   the waypoint opens HBONE to the endpoint with *its own* identity.
4. The enforcement point is the destination's ztunnel, inbound HBONE (peer identity from mTLS)
   or inbound plaintext 15006 (no identity, so STRICT denies), evaluated by
   `meshcore.authz.explain_in`, the evaluator ztunnel calls. A destination that is not captured
   has no ztunnel in front of it: nothing is enforced.
With live state (`live.py`: `state.model` is None) pods and services are looked up by name in
what ztunnel holds, and what only the manifests know (the waypoint's L7 policies, "should be
captured" notes) is left out and said to be.
Endpoint choices (ztunnel's are random, weighted by capacity) are made deterministically here,
first by (namespace, name), or as `--endpoint` says; the result names the choice. Command-line
names are resolved by why_resolve.py.
"""

from __future__ import annotations

import dataclasses

from ambientctl.debug.errors import NotFoundError
from ambientctl.debug.state import MeshState, pod_of
from ambientctl.debug.why_l7 import (
    REQUEST_OPTIONS,
    HttpRequest,
    L7Result,
    WaypointRefusal,
    applicable_names,
    evaluate_at_waypoint,
)
from ambientctl.debug.why_resolve import (
    Chooser,
    Party,
    first_ip,
    parse_ip,
    resolve_destination,
    resolve_source,
    split_target,
)
from istiod_lite.translate.waypoints import find_waypoints
from meshcore.authz import ConnectionAttributes, Explanation, explain_in
from meshcore.identity import SpiffeId
from meshcore.wds import (
    IPAddress,
    Service,
    ServiceDestination,
    TunnelProtocol,
    Workload,
    find_destination,
    select_endpoint,
)
from meshcore.wds.lookup import Endpoint
from ztunnel.proxy.errors import ProxyError
from ztunnel.proxy.next_hop import HboneHop, build_request, hostport


@dataclasses.dataclass(frozen=True, slots=True)
class Waypoint:
    """The waypoint on the path and the L7 policies (`ns/name`) attached to what it serves."""

    workload: Workload
    gateway: str  # "ns/name" of the waypoint Gateway, or its service key when unknown
    l7_policies: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class WhyResult:
    """What happens to one connection. `outcome` is allow, deny or fail (not a policy)."""

    source: Party
    destination: str  # as dialed: "ip:port" plus what it is
    outcome: str
    reason: str
    transport: str  # "HBONE (mTLS)", "plaintext", "passthrough (plain TCP, outside the mesh)"
    steps: tuple[str, ...]
    enforced_at: str | None = None
    peer_identity: SpiffeId | None = None  # what the enforcing ztunnel sees
    explanation: Explanation | None = None
    waypoint: Waypoint | None = None
    notes: tuple[str, ...] = ()
    l7: L7Result | None = None  # the waypoint's decision on the given request
    l7_skipped: str | None = None  # why L7 was not evaluated (a waypoint or a request was there)

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"


def why(state: MeshState, source: str, destination: str, *,
        endpoint: str | None = None, request: HttpRequest | None = None) -> WhyResult:
    """Follow a connection from `source` to `destination` (`DST:PORT`) and decide it; with
    `request`, also the waypoint's L7 decision on that HTTP request, when there is a waypoint."""
    src = resolve_source(state, source)
    dst_text, port = split_target(destination)
    dialed, what = resolve_destination(state, dst_text)
    dest = f"{hostport(dialed, port)} ({what})"
    chooser = Chooser(endpoint)
    notes = _source_notes(state, src)
    if src.captured:
        assert src.workload is not None
        result = _from_captured(state, src, dialed, port, dest, chooser, notes, request)
    else:
        result = _from_outside(state, src, dialed, port, dest, chooser, notes)
    if endpoint and not any(endpoint in (c.workload.name, f"{c.workload.namespace}/"
                                         f"{c.workload.name}")
                            for _, cands in chooser.calls for c in cands):
        raise NotFoundError(f"--endpoint {endpoint}: not a candidate endpoint on this path")
    if request is not None and result.waypoint is None:
        skipped = ("the request options were given, but this path does not go through a "
                   "waypoint: ztunnel enforces L4 only, no L7 policy is evaluated")
        result = dataclasses.replace(result, l7_skipped=skipped,
                                     notes=(*result.notes, skipped))
    return result


def _source_notes(state: MeshState, src: Party) -> list[str]:
    notes = []
    if src.workload is not None and not src.captured:
        pod = pod_of(state.model, src.workload.namespace, src.workload.name)
        if pod is not None and state.model is not None and state.model.is_enrolled(pod):
            notes.append(f"{src.label} should be in the mesh ({state.model.enrollment(pod).reason})"
                         " but is not captured yet (no ambient.istio.io/redirection: enabled); "
                         "evaluated as ztunnel sees it now (--assume-captured evaluates it as "
                         "captured)")
    return notes


def _from_captured(state: MeshState, src: Party, dialed: IPAddress, port: int, dest: str,
                   chooser: Chooser, notes: list[str], request: HttpRequest | None) -> WhyResult:
    assert src.workload is not None
    steps = [f"source {src.label} is captured: its node's ztunnel handles the connection"]
    base = (src, dest)
    try:
        hop = build_request(state.snapshot, src.workload, dialed, port, choose=chooser)
    except ProxyError as e:
        return WhyResult(*base, outcome="fail", reason=f"source ztunnel: {e}",
                         transport="none", steps=tuple(steps), notes=tuple(notes))
    if not isinstance(hop, HboneHop):
        if hop.workload is None:
            steps.append(f"{dest} is not in the mesh: ztunnel passes it through as plain TCP")
            return WhyResult(*base, outcome="allow", reason="passthrough: the destination is "
                             "outside the mesh, no mesh policy applies",
                             transport="passthrough (plain TCP, outside the mesh)",
                             steps=tuple(steps), notes=tuple(notes))
        ep = Endpoint(hop.workload, parse_ip(hop.address[0]) or dialed, hop.address[1])
        steps.append(_endpoint_step(ep, chooser, hop.service))
        return _not_captured(base, ep, steps, notes, "plaintext")
    if not hop.via_waypoint:
        assert hop.workload is not None
        ip_text, _, port_text = hop.authority.rpartition(":")
        ep = Endpoint(hop.workload, parse_ip(ip_text) or dialed, int(port_text))
        steps.append(_endpoint_step(ep, chooser, hop.service))
        steps.append(f"HBONE (mTLS) to {hop.address[0]}:{hop.address[1]}, CONNECT "
                     f"{hop.authority}, presenting {src.workload.identity}")
        return _enforce(state, base, ep, src.workload.identity,
                        first_ip(src.workload, ep.ip.version), "HBONE (mTLS)", steps, notes)
    return _through_waypoint(state, src, hop, dialed, port, base, chooser, steps, notes,
                             request)


def _through_waypoint(state: MeshState, src: Party, hop: HboneHop, dialed: IPAddress, port: int,
                      base: tuple[Party, str], chooser: Chooser, steps: list[str],
                      notes: list[str], request: HttpRequest | None) -> WhyResult:
    assert hop.workload is not None and src.workload is not None
    wp = hop.workload
    waypoint = _waypoint_info(state, wp, hop.service)
    steps.append(f"{'service' if hop.service else 'pod'} uses waypoint {waypoint.gateway}: "
                 f"HBONE (mTLS) to waypoint pod {wp.namespace}/{wp.name} "
                 f"{hop.address[0]}:{hop.address[1]}, CONNECT {hop.authority}")
    l7, skipped, stop = _waypoint_l7(state, src, hop, dialed, waypoint, base, steps, notes,
                                     request)
    if stop is not None:
        return stop
    if hop.service is not None:
        ep = select_endpoint(state.snapshot, hop.service, port, source=wp, dialed_ip=dialed,
                             choose=chooser)
        if ep is None:
            return WhyResult(*base, outcome="fail", transport="HBONE (mTLS)",
                             reason=f"waypoint: no healthy upstream for {hop.service.key} "
                             f"port {port}", steps=tuple(steps), waypoint=waypoint,
                             notes=tuple(notes), l7=l7, l7_skipped=skipped)
    else:
        found = find_destination(state.snapshot, dialed, port, network=state.mesh.network)
        assert found is not None and not isinstance(found, ServiceDestination)
        ep = Endpoint(found.workload, dialed, port)
    steps.append("waypoint → " + _endpoint_step(ep, chooser, hop.service).removeprefix(
        "endpoint: "))
    steps.append(f"waypoint opens HBONE (mTLS) to the endpoint presenting {wp.identity}")
    result = _enforce(state, base, ep, wp.identity, first_ip(wp, ep.ip.version),
                      "HBONE (mTLS)", steps, notes)
    if result.outcome == "deny":
        result = dataclasses.replace(result, notes=(*result.notes, (
            f"behind a waypoint the destination's ztunnel sees the waypoint's identity "
            f"({wp.identity}), not the client's: allow the waypoint's principal at L4 and "
            "move client rules to a policy with targetRefs")))
    if l7 is not None:
        result = dataclasses.replace(result, reason=f"L7 at waypoint {waypoint.gateway}: "
                                     f"{l7.decision.reason}; L4 at the destination: "
                                     f"{result.reason}")
    elif request is not None:  # live: the request could not be evaluated; do not guess
        result = dataclasses.replace(result, reason=f"{result.reason} (L4 only: the waypoint's "
                                     "L7 policies were not evaluated, see the note)")
    return dataclasses.replace(result, waypoint=waypoint, l7=l7, l7_skipped=skipped)


def _waypoint_l7(state: MeshState, src: Party, hop: HboneHop, dialed: IPAddress,
                 waypoint: Waypoint, base: tuple[Party, str], steps: list[str], notes: list[str],
                 request: HttpRequest | None
                 ) -> tuple[L7Result | None, str | None, WhyResult | None]:
    """The waypoint's L7 step: (its decision on `request`, why none was made, the final result
    when the path ends at the waypoint: an L7 deny or a refused request)."""
    assert src.workload is not None
    wp = waypoint.workload
    l7, skipped = None, None
    if state.model is None:
        skipped = ("they are the waypoint's configuration, not ztunnel's (-f MANIFEST_DIR lists "
                   "them); a live ztunnel cannot evaluate them: with -f, --method/--path do")
    elif request is None:
        skipped = (f"no HTTP request given: {REQUEST_OPTIONS} evaluate them as the waypoint "
                   "would" if waypoint.l7_policies else None)
    else:
        try:
            l7 = evaluate_at_waypoint(state, waypoint.gateway, src.workload.identity,
                                      first_ip(src.workload, dialed.version), hop.authority,
                                      request)
        except WaypointRefusal as e:
            return None, None, WhyResult(
                *base, outcome="fail", transport="HBONE (mTLS)",
                reason=f"waypoint {waypoint.gateway}: {e}", steps=tuple(steps),
                waypoint=waypoint, notes=tuple(notes))
        a = l7.attributes
        steps.append(f"waypoint {waypoint.gateway} authorizes {a.method} {a.path} (host "
                     f"{a.host}) from {a.principal}: {l7.summary()}")
    if l7 is None:
        listed = None if state.model is None else ", ".join(waypoint.l7_policies) or "none applies"
        notes.append("L7 policies at the waypoint see the client identity "
                     f"{src.workload.identity} and are evaluated per request there: "
                     f"{'; '.join(x for x in (listed, skipped) if x)}; HTTPRoutes may send "
                     "the request elsewhere")
    elif not l7.decision.allowed:
        return l7, None, WhyResult(
            *base, outcome="deny", transport="HBONE (mTLS)",
            reason=f"L7 at waypoint {waypoint.gateway}: {l7.decision.reason}",
            steps=tuple(steps), enforced_at=f"waypoint {waypoint.gateway} (pod "
            f"{wp.namespace}/{wp.name}), L7 authorization",
            peer_identity=src.workload.identity, waypoint=waypoint, l7=l7,
            notes=(*notes, "the waypoint answers 403 itself: the request never reaches the "
                   "endpoint, so no L4 policy is evaluated there"))
    else:
        notes.append("HTTPRoutes at the waypoint may send the request elsewhere")
    return l7, skipped, None


def _from_outside(state: MeshState, src: Party, dialed: IPAddress, port: int, dest: str,
                  chooser: Chooser, notes: list[str]) -> WhyResult:
    steps = [f"source {src.label} is not captured: no ztunnel on its side, it sends plaintext"]
    base = (src, dest)
    found = find_destination(state.snapshot, dialed, port, network=state.mesh.network)
    if found is None:
        steps.append(f"{dest} is not in the mesh")
        return WhyResult(*base, outcome="allow", reason="outside the mesh on both ends: "
                         "no mesh policy applies", transport="plaintext", steps=tuple(steps),
                         notes=tuple(notes))
    if isinstance(found, ServiceDestination):
        ep = select_endpoint(state.snapshot, found.service, port, dialed_ip=dialed,
                             choose=chooser)
        if ep is None:
            return WhyResult(*base, outcome="fail", transport="plaintext",
                             reason=f"service {found.service.key} has no ready endpoint for "
                             f"port {port}", steps=tuple(steps), notes=tuple(notes))
        steps.append("the client's service proxy (kube-proxy) picks " +
                     _endpoint_step(ep, chooser, found.service).removeprefix("endpoint: "))
        if found.service.waypoint is not None:
            notes.append(f"service {found.service.key} has a waypoint, but traffic from outside "
                         "the mesh does not go through it")
    else:
        ep = Endpoint(found.workload, dialed, port)
        steps.append(_endpoint_step(ep, chooser, None))
    return _enforce(state, base, ep, None, src.ip, "plaintext", steps, notes)


def _endpoint_step(ep: Endpoint, chooser: Chooser, service: Service | None) -> str:
    via = f" of service {service.key}" if service is not None else ""
    return (f"endpoint: pod {ep.workload.namespace}/{ep.workload.name}{via} "
            f"{hostport(ep.ip, ep.port)}{chooser.describe(ep)}")


def _not_captured(base: tuple[Party, str], ep: Endpoint, steps: list[str], notes: list[str],
                  transport: str) -> WhyResult:
    steps.append(f"pod {ep.workload.namespace}/{ep.workload.name} is not captured: no ztunnel "
                 "enforces policy in front of it")
    return WhyResult(*base, outcome="allow", transport=transport,
                     reason="not enforced: the destination is not in the ambient mesh, so no "
                     "L4 policy applies", steps=tuple(steps), notes=tuple(notes))


def _enforce(state: MeshState, base: tuple[Party, str], ep: Endpoint, peer: SpiffeId | None,
             peer_ip: IPAddress, transport: str, steps: list[str],
             notes: list[str]) -> WhyResult:
    if ep.workload.tunnel_protocol is not TunnelProtocol.HBONE:
        return _not_captured(base, ep, steps, notes, transport)
    where = (f"ztunnel on node {ep.workload.node or '?'}, inbound "
             + ("HBONE (15008)" if peer is not None else "plaintext (15006)")
             + f" for {ep.workload.namespace}/{ep.workload.name}")
    conn = ConnectionAttributes(peer, peer_ip, ep.ip, ep.port, ep.workload)
    explanation = explain_in(state.snapshot, conn)
    d = explanation.decision
    return WhyResult(*base, outcome="allow" if d.allowed else "deny",
                     reason=d.reason, transport=transport, steps=tuple(steps),
                     enforced_at=where, peer_identity=peer, explanation=explanation,
                     notes=tuple(notes))


def _waypoint_info(state: MeshState, wp: Workload, service: Service | None) -> Waypoint:
    if state.model is None:  # live: no Gateways; name the waypoint's Service (Istio: same name)
        svc = next((state.snapshot.services[e.service] for e in wp.services
                    if e.service in state.snapshot.services), None)
        label = f"{svc.namespace}/{svc.name}" if svc else f"{wp.namespace}/{wp.name}"
        return Waypoint(wp, label, ())
    gateway = None
    for (ns, name), found in find_waypoints(state.model, state.mesh).items():
        if any(e.service == f"{ns}/{found.hostname}" for e in wp.services) or (
                wp.namespace == ns and wp.name.startswith(f"{name}-")):
            gateway = (ns, name)
            break
    label = f"{gateway[0]}/{gateway[1]}" if gateway else f"{wp.namespace}/{wp.name}"
    # what the waypoint itself would apply (waypoint.policy.applicable on the translation)
    return Waypoint(wp, label, applicable_names(state, label, service.hostname if service
                                                else ""))
