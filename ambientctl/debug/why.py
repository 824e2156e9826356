"""`ambientctl why SRC DST:PORT`: would the mesh allow this connection, and which policy decides.

Called by the `why` command (`why_cli`) and by tests. Pure over a `MeshState` (state.py). It
follows the connection the way the data path does, with the data path's own code:
1. The source: a pod (`ns/name`) or an IP. It is *captured* when its Workload speaks HBONE
   (the node agent redirected it); only then does a source ztunnel handle its traffic.
2. Captured source: `ztunnel.proxy.next_hop.build_request` (ztunnel's outbound decision)
   chooses passthrough, direct HBONE or the waypoint. Uncaptured source: the client's own
   stack resolves a VIP (kube-proxy) to an endpoint with `meshcore.wds.select_endpoint`, and
   the bytes arrive in plaintext.
3. Through a waypoint: the waypoint evaluates its L7 policies (listed, not evaluated here; they
   need an HTTP request) and opens HBONE to the endpoint with *its own* identity.
4. The enforcement point is the destination's ztunnel, inbound HBONE (peer identity from mTLS)
   or inbound plaintext 15006 (no identity, so STRICT denies), evaluated by
   `meshcore.authz.explain_in`, the evaluator ztunnel calls. A destination that is not captured
   has no ztunnel in front of it: nothing is enforced.
With live state (`live.py`: `state.model` is None) pods and services are looked up by name in
what ztunnel holds, and what only the manifests know (the waypoint's L7 policies, "should be
captured" notes) is left out and said to be.
Endpoint choices (ztunnel's are random, weighted by capacity) are made deterministically here,
first by (namespace, name), or as `--endpoint` says; the result names the choice.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

from ambientctl.debug.errors import NotFoundError
from ambientctl.debug.state import MeshState, is_pod, live_workload, pod_of, service_named
from istiod_lite.translate.mesh import pod_uid
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
class Party:
    """The source as the mesh sees it."""

    label: str  # "shop/client" or the IP
    ip: IPAddress
    workload: Workload | None

    @property
    def captured(self) -> bool:
        return self.workload is not None and self.workload.tunnel_protocol is TunnelProtocol.HBONE


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

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"


class _Chooser:
    """Deterministic endpoint choice (first by namespace/name), or the `--endpoint` pod."""

    def __init__(self, prefer: str | None) -> None:
        self.prefer = prefer
        self.calls: list[tuple[Endpoint, list[Endpoint]]] = []

    def __call__(self, candidates: Sequence[Endpoint], weights: Sequence[int]) -> Endpoint:
        ordered = sorted(candidates,
                         key=lambda e: (e.workload.namespace, e.workload.name, str(e.ip)))
        pick = ordered[0]
        if self.prefer:
            wanted = [e for e in ordered if self.prefer in (
                e.workload.name, f"{e.workload.namespace}/{e.workload.name}")]
            pick = wanted[0] if wanted else pick
        self.calls.append((pick, ordered))
        return pick

    def describe(self, pick: Endpoint) -> str:
        for chosen, ordered in self.calls:
            if chosen == pick and len(ordered) > 1:
                how = "as --endpoint asked" if self.prefer in (
                    pick.workload.name, f"{pick.workload.namespace}/{pick.workload.name}") \
                    else "first by name; the data path picks at random, --endpoint picks another"
                names = ", ".join(f"{e.workload.namespace}/{e.workload.name}" for e in ordered)
                return f" ({how}; candidates: {names})"
        return ""


def parse_ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def split_target(text: str) -> tuple[str, int]:
    """`DST:PORT` (`[v6]:PORT` for IPv6) → (DST, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535 or not host:
        raise NotFoundError(f"destination {text!r}: expected DST:PORT, e.g. shop/web:8080, "
                            "10.96.0.10:80 or [fd00::1]:80")
    return host.strip("[]") if host.startswith("[") else host, int(port)


def _first_ip(workload: Workload, family: int | None = None) -> IPAddress:
    for ip in workload.addresses:
        if family is None or ip.version == family:
            return ip
    return workload.addresses[0]


def resolve_source(state: MeshState, text: str) -> Party:
    ip = parse_ip(text)
    snap, net = state.snapshot, state.mesh.network
    if ip is not None:
        if (net, ip) in snap.services_by_vip:
            raise NotFoundError(f"source {text} is a service VIP; name a pod or a client IP")
        return Party(text, ip, snap.workloads_by_address.get((net, ip)))
    workload = _pod_workload(state, text, "source")
    return Party(f"{workload.namespace}/{workload.name}", _first_ip(workload), workload)


def _pod_workload(state: MeshState, text: str, role: str) -> Workload:
    ns, _, name = text.removeprefix("pod/").partition("/")
    if not ns or not name:
        raise NotFoundError(f"{role} {text!r}: expected NAMESPACE/POD or an IP")
    if state.model is None:
        return live_workload(state, ns, name, role)
    pod = pod_of(state.model, ns, name)
    if pod is None:
        known = ", ".join(p.name for p in state.model.pods if p.namespace == ns) or "none"
        raise NotFoundError(f"{role}: no pod {ns}/{name} in the configuration "
                            f"(pods in {ns}: {known})")
    workload = state.snapshot.workloads.get(pod_uid(state.mesh, ns, name))
    if workload is None or not workload.addresses:
        raise NotFoundError(f"{role}: pod {ns}/{name} is not in ztunnel's state: it has no IP "
                            "yet (status.podIP) or has finished; is it running?")
    return workload


def resolve_destination(state: MeshState, text: str) -> tuple[IPAddress, str]:
    """(the IP a client would dial, what it names) for an IP, pod, service or hostname."""
    ip = parse_ip(text)
    snap = state.snapshot
    if ip is not None:
        vip = snap.services_by_vip.get((state.mesh.network, ip))
        pod = snap.workloads_by_address.get((state.mesh.network, ip))
        what = (f"VIP of service {vip[0].key}" if vip else
                f"IP of pod {pod.namespace}/{pod.name}" if pod else "not a mesh address")
        return ip, what
    service = None
    if text.startswith("svc/") or (text.count("/") == 1 and not text.startswith("pod/")
                                   and not is_pod(state, *text.split("/", 1))):
        ns, _, name = text.removeprefix("svc/").partition("/")
        service = service_named(state, ns, name)
        if service is None:
            raise NotFoundError(f"destination: no pod or service {ns}/{name} in the "
                                "configuration (use pod/NS/NAME or svc/NS/NAME to be explicit)")
    elif "/" not in text:
        service = next((s for s in snap.services.values() if s.hostname == text), None)
        if service is None:
            raise NotFoundError(f"destination: no service with hostname {text!r}")
    if service is not None:
        if not service.addresses:
            raise NotFoundError(f"destination: service {service.key} is headless (no VIP); "
                                "name one of its pods instead")
        return service.addresses[0].address, f"VIP of service {service.key}"
    workload = _pod_workload(state, text, "destination")
    return _first_ip(workload), f"IP of pod {workload.namespace}/{workload.name}"


def why(state: MeshState, source: str, destination: str, *,
        endpoint: str | None = None) -> WhyResult:
    """Follow a connection from `source` to `destination` (`DST:PORT`) and decide it."""
    src = resolve_source(state, source)
    dst_text, port = split_target(destination)
    dialed, what = resolve_destination(state, dst_text)
    dest = f"{hostport(dialed, port)} ({what})"
    chooser = _Chooser(endpoint)
    notes = _source_notes(state, src)
    if src.captured:
        assert src.workload is not None
        result = _from_captured(state, src, dialed, port, dest, chooser, notes)
    else:
        result = _from_outside(state, src, dialed, port, dest, chooser, notes)
    if endpoint and not any(endpoint in (c.workload.name, f"{c.workload.namespace}/"
                                         f"{c.workload.name}")
                            for _, cands in chooser.calls for c in cands):
        raise NotFoundError(f"--endpoint {endpoint}: not a candidate endpoint on this path")
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
                   chooser: _Chooser, notes: list[str]) -> WhyResult:
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
                        _first_ip(src.workload, ep.ip.version), "HBONE (mTLS)", steps, notes)
    return _through_waypoint(state, src, hop, dialed, port, base, chooser, steps, notes)


def _through_waypoint(state: MeshState, src: Party, hop: HboneHop, dialed: IPAddress, port: int,
                      base: tuple[Party, str], chooser: _Chooser, steps: list[str],
                      notes: list[str]) -> WhyResult:
    assert hop.workload is not None and src.workload is not None
    wp = hop.workload
    waypoint = _waypoint_info(state, wp, hop.service)
    steps.append(f"{'service' if hop.service else 'pod'} uses waypoint {waypoint.gateway}: "
                 f"HBONE (mTLS) to waypoint pod {wp.namespace}/{wp.name} "
                 f"{hop.address[0]}:{hop.address[1]}, CONNECT {hop.authority}")
    listed = (", ".join(waypoint.l7_policies) or "none target it") if state.model is not None \
        else "they are the waypoint's configuration, not ztunnel's (-f MANIFEST_DIR lists them)"
    notes.append("L7 policies at the waypoint see the client identity "
                 f"{src.workload.identity} and are evaluated per request there: {listed}; "
                 "HTTPRoutes may send the request elsewhere")
    if hop.service is not None:
        ep = select_endpoint(state.snapshot, hop.service, port, source=wp, dialed_ip=dialed,
                             choose=chooser)
        if ep is None:
            return WhyResult(*base, outcome="fail", transport="HBONE (mTLS)",
                             reason=f"waypoint: no healthy upstream for {hop.service.key} "
                             f"port {port}", steps=tuple(steps), waypoint=waypoint,
                             notes=tuple(notes))
    else:
        found = find_destination(state.snapshot, dialed, port, network=state.mesh.network)
        assert found is not None and not isinstance(found, ServiceDestination)
        ep = Endpoint(found.workload, dialed, port)
    steps.append("waypoint → " + _endpoint_step(ep, chooser, hop.service).removeprefix(
        "endpoint: "))
    steps.append(f"waypoint opens HBONE (mTLS) to the endpoint presenting {wp.identity}")
    result = _enforce(state, base, ep, wp.identity, _first_ip(wp, ep.ip.version),
                      "HBONE (mTLS)", steps, notes)
    if result.outcome == "deny":
        result = dataclasses.replace(result, notes=(*result.notes, (
            f"behind a waypoint the destination's ztunnel sees the waypoint's identity "
            f"({wp.identity}), not the client's: allow the waypoint's principal at L4 and "
            "move client rules to a policy with targetRefs")))
    return dataclasses.replace(result, waypoint=waypoint)


def _from_outside(state: MeshState, src: Party, dialed: IPAddress, port: int, dest: str,
                  chooser: _Chooser, notes: list[str]) -> WhyResult:
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


def _endpoint_step(ep: Endpoint, chooser: _Chooser, service: Service | None) -> str:
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
    policies = []
    for pol in state.model.sorted("AuthorizationPolicy"):
        for ref in getattr(pol, "target_refs", ()):
            ns = ref.namespace or pol.namespace
            if (gateway is not None and ref.kind == "Gateway" and (ns, ref.name) == gateway) or (
                    service is not None and ref.kind == "Service"
                    and (ns, ref.name) == (service.namespace, service.name)) or (
                    ref.kind == "GatewayClass" and ref.name == "istio-waypoint"
                    and pol.namespace == state.mesh.root_namespace):
                policies.append(f"{pol.namespace}/{pol.name}")
                break
    label = f"{gateway[0]}/{gateway[1]}" if gateway else f"{wp.namespace}/{wp.name}"
    return Waypoint(wp, label, tuple(policies))
