"""Pure lookups over a `Snapshot`: where does `ip:port` go, which endpoint, which policies.

Called by ztunnel's outbound path (`find_destination`, `select_endpoint`), its inbound path
and the authorization evaluator (`policies_for`), and the waypoint. No I/O, no state; the
random choice in `select_endpoint` is injectable so tests are deterministic.

Rules (AMBIENT-INTERNALS §2.6 steps 1-2 and "Endpoint selection", §7.1):
* `find_destination`: the IP is first looked up as a service VIP on the network
  (preferring a service in the caller's namespace when several share the VIP), then as a
  workload IP; None means "not in the mesh" (passthrough).
* `select_endpoint`: target port from `Service.ports` (0 = named port, resolved per workload
  through `Workload.services`); endpoints without the port are dropped; unhealthy endpoints
  are dropped unless the service's health policy is ALLOW_ALL; STRICT / FAILOVER rank by the
  leading `routing_preference` scopes that match the source (STRICT keeps only full matches);
  then a random pick weighted by `Workload.capacity`. The IP is the one the caller dialed if
  the workload has it, else one of the same family as the VIP, else the first.
  Workloads with no IP (hostname-only, resolved by DNS in ztunnel) are not selectable here.
* `policies_for`: GLOBAL policies, then the workload namespace's NAMESPACE policies, then the
  selector-scoped ones the workload names (unknown names skipped), without duplicates.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from meshcore.wds._gate import IPAddress
from meshcore.wds.authorization import Authorization
from meshcore.wds.store import Snapshot
from meshcore.wds.workload import (
    HealthPolicy,
    LoadBalancingMode,
    LoadBalancingScope,
    Service,
    Workload,
    WorkloadStatus,
)


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceDestination:
    """The dialed IP is a service VIP; `port` is the dialed (service) port."""

    service: Service
    vip: IPAddress
    port: int


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadDestination:
    """The dialed IP is a workload (pod) IP."""

    workload: Workload
    ip: IPAddress
    port: int


Destination = ServiceDestination | WorkloadDestination


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """A chosen upstream: workload, the IP to dial and its target port."""

    workload: Workload
    ip: IPAddress
    port: int


Chooser = Callable[[Sequence[Endpoint], Sequence[int]], Endpoint]


def random_choice(candidates: Sequence[Endpoint], weights: Sequence[int]) -> Endpoint:
    """The default chooser: `random.choices` weighted by capacity."""
    return random.choices(candidates, weights=weights, k=1)[0]


def find_destination(
    snapshot: Snapshot, ip: IPAddress, port: int, *, network: str = "", source_namespace: str = ""
) -> Destination | None:
    """Resolve a dialed `ip:port`: service VIP first, then workload IP; None if unknown."""
    services = snapshot.services_by_vip.get((network, ip))
    if services:
        preferred = [s for s in services if s.namespace == source_namespace]
        return ServiceDestination((preferred or list(services))[0], ip, port)
    workload = snapshot.workloads_by_address.get((network, ip))
    if workload is not None:
        return WorkloadDestination(workload, ip, port)
    return None


def select_endpoint(
    snapshot: Snapshot,
    service: Service,
    service_port: int,
    *,
    source: Workload | None = None,
    dialed_ip: IPAddress | None = None,
    choose: Chooser = random_choice,
) -> Endpoint | None:
    """Pick an endpoint of `service` for `service_port`; None if there is no usable one."""
    port = service.port(service_port)
    if port is None:
        return None
    lb = service.load_balancing
    allow_unhealthy = lb is not None and lb.health_policy is HealthPolicy.ALLOW_ALL
    candidates: list[tuple[Workload, int]] = []
    for workload in snapshot.endpoints.get(service.key, {}).values():
        if workload.status is WorkloadStatus.UNHEALTHY and not allow_unhealthy:
            continue
        if not workload.addresses:
            continue
        target = port.target_port or _named_port(workload, service.key, service_port)
        if target:
            candidates.append((workload, target))
    if lb is not None and lb.mode in (LoadBalancingMode.STRICT, LoadBalancingMode.FAILOVER):
        candidates = _by_locality(candidates, lb.routing_preference, lb.mode, source)
    if not candidates:
        return None
    endpoints = [Endpoint(w, _pick_ip(w, dialed_ip), target) for w, target in candidates]
    return choose(endpoints, [max(w.capacity, 0) or 1 for w, _ in candidates])


def policies_for(snapshot: Snapshot, workload: Workload) -> tuple[Authorization, ...]:
    """The policies that apply to `workload`: global + its namespace + selector-referenced."""
    keys = [
        *snapshot.global_policies,
        *snapshot.namespace_policies.get(workload.namespace, ()),
        *workload.authorization_policies,
    ]
    seen: set[str] = set()
    out: list[Authorization] = []
    for key in keys:
        policy = snapshot.policies.get(key)
        if policy is not None and key not in seen:
            seen.add(key)
            out.append(policy)
    return tuple(out)


def _named_port(workload: Workload, service_key: str, service_port: int) -> int:
    for p in workload.ports_for(service_key) or ():
        if p.service_port == service_port:
            return p.target_port
    return 0


def _scope_matches(scope: LoadBalancingScope, a: Workload, b: Workload) -> bool:
    if scope is LoadBalancingScope.REGION:
        return a.locality.region == b.locality.region
    if scope is LoadBalancingScope.ZONE:
        return a.locality.zone == b.locality.zone
    if scope is LoadBalancingScope.SUBZONE:
        return a.locality.subzone == b.locality.subzone
    if scope is LoadBalancingScope.NODE:
        return a.node == b.node
    if scope is LoadBalancingScope.CLUSTER:
        return a.cluster_id == b.cluster_id
    if scope is LoadBalancingScope.NETWORK:
        return a.network == b.network
    return True


def _by_locality(
    candidates: list[tuple[Workload, int]],
    scopes: tuple[LoadBalancingScope, ...],
    mode: LoadBalancingMode,
    source: Workload | None,
) -> list[tuple[Workload, int]]:
    if source is None or not scopes:
        return candidates

    def rank(w: Workload) -> int:
        n = 0
        for scope in scopes:
            if not _scope_matches(scope, source, w):
                break
            n += 1
        return n

    ranked = [(rank(w), (w, t)) for w, t in candidates]
    if mode is LoadBalancingMode.STRICT:
        return [c for r, c in ranked if r == len(scopes)]
    best = max((r for r, _ in ranked), default=0)
    return [c for r, c in ranked if r == best]


def _pick_ip(workload: Workload, dialed: IPAddress | None) -> IPAddress:
    if dialed is not None:
        if dialed in workload.addresses:
            return dialed
        for ip in workload.addresses:
            if ip.version == dialed.version:
                return ip
    return workload.addresses[0]
