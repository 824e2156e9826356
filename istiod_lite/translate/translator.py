"""`translate(model, mesh) -> ResourceSet`: the whole model as workload-API resources.

Called by istiod_lite.app (through `IncrementalTranslator`) whenever a config source yields a
new ClusterModel, and by tests and debugging tools (`translate`). Deterministic (objects are
visited in (namespace, name) order). Hands back every `Address` (workloads and services),
`Authorization`, waypoint `RouteConfiguration` and `L7Authorization` keyed by resource name,
plus the status messages produced on the way (policy conversion notes, missing waypoints, pods
without IPs).

Incremental: `translate_incremental(model, mesh, memo)` takes the memo of the previous
translation and reuses each resource whose inputs (its fingerprint, memo.py) did not change:
the very same message object, so the xDS cache skips serializing it. `translate` is the same
code with an empty memo, and the result is identical either way (tests/istiod_lite/model/
test_incremental.py checks that over random edit sequences). What each resource reads:
* Authorization from an AuthorizationPolicy: the policy;
* converted PeerAuthentication: the policy and its namespace/mesh-level parents;
* Service: the Service, its Namespace, the waypoints;
* pod Workload: the Pod, its Namespace and Node, the waypoints, the selector-scoped policies
  (name, selector) of its namespace and the root namespace, the selecting Services of its
  namespace, the selector-less Services whose EndpointSlices name it, and the
  PeerAuthentications of its namespace plus the mesh-level ones;
* EndpointSlice workloads: the slice and its Service;
* L7Authorization: the policy, the waypoints, the Services its targetRefs name;
* RouteConfigurations (all at once): the HTTPRoute, Service, Gateway and Namespace maps.
Invariant: a problem with one object never stops the others from being translated. Messages in
a ResourceSet are shared with the memo and the xDS cache: never mutate them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import betterproto

from istiod_lite.translate.authorization import convert_authorization_policy
from istiod_lite.translate.l7_policies import L7_AUTHORIZATION_TYPE_URL, convert_l7_policy
from istiod_lite.translate.memo import Memo, MemoRound, MemoStats
from istiod_lite.translate.mesh import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    MeshConfig,
    StatusMessage,
    authorization_resource_name,
    pod_uid,
    service_hostname,
    service_resource_name,
)
from istiod_lite.translate.peer_authentication import (
    PeerAuthIndex,
    convert_port_level,
    static_strict_policy,
    workload_policy_names,
)
from istiod_lite.translate.routes import ROUTE_CONFIGURATION_TYPE_URL, translate_routes
from istiod_lite.translate.services import ServiceIndex, build_service_index, translate_service
from istiod_lite.translate.waypoints import Waypoint, find_waypoints
from istiod_lite.translate.workloads import translate_endpoint_slice, translate_pod
from meshcore.model import (
    AuthorizationPolicy,
    ClusterModel,
    EndpointSlice,
    PeerAuthentication,
    Pod,
    Service,
    selects,
)
from meshcore.protos.ambient.waypoint.v1 import L7Authorization, RouteConfiguration
from meshcore.protos.istio.security import Authorization, Scope
from meshcore.protos.istio.workload import Address

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceSet:
    """Resources for the two ztunnel type URLs, keyed by resource name."""

    addresses: Mapping[str, Address]
    authorizations: Mapping[str, Authorization]
    statuses: tuple[StatusMessage, ...] = ()
    # Waypoint resources (ambient.waypoint.v1), served on the same Delta xDS stream.
    route_configurations: Mapping[str, RouteConfiguration] = dataclasses.field(
        default_factory=lambda: _EMPTY)
    l7_authorizations: Mapping[str, L7Authorization] = dataclasses.field(
        default_factory=lambda: _EMPTY)

    def resources(self, type_url: str) -> Mapping[str, betterproto.Message]:
        try:
            return self.by_type_url[type_url]
        except KeyError:
            raise KeyError(f"unknown type URL {type_url!r}") from None

    @property
    def by_type_url(self) -> Mapping[str, Mapping[str, betterproto.Message]]:
        return {
            ADDRESS_TYPE_URL: self.addresses,
            AUTHORIZATION_TYPE_URL: self.authorizations,
            ROUTE_CONFIGURATION_TYPE_URL: self.route_configurations,
            L7_AUTHORIZATION_TYPE_URL: self.l7_authorizations,
        }


def translate(model: ClusterModel, mesh: MeshConfig | None = None) -> ResourceSet:
    """The whole model, translated from scratch."""
    return translate_incremental(model, mesh, None)[0]


class IncrementalTranslator:
    """`translate` that remembers its last result and reuses unchanged resources (one per
    config stream; not thread-safe)."""

    def __init__(self) -> None:
        self._memo: Memo | None = None
        self._last: tuple[ClusterModel, MeshConfig, ResourceSet] | None = None
        self.last_stats: MemoStats | None = None

    def translate(self, model: ClusterModel, mesh: MeshConfig | None = None) -> ResourceSet:
        mesh = mesh or MeshConfig()
        if self._last is not None and self._last[0] is model and self._last[1] == mesh:
            return self._last[2]
        result, self._memo, self.last_stats = translate_incremental(model, mesh, self._memo)
        self._last = (model, mesh, result)
        return result


def translate_incremental(model: ClusterModel, mesh: MeshConfig | None, memo: Memo | None,
                          ) -> tuple[ResourceSet, Memo, MemoStats]:
    """Translate `model`, reusing results of the translation that produced `memo`."""
    mesh = mesh or MeshConfig()
    rnd = MemoRound(memo, mesh)
    tokens = rnd.table("tokens")
    statuses: list[StatusMessage] = []
    authz: dict[str, Authorization] = {}
    addresses: dict[str, Address] = {}
    waypoints = tokens.canon("waypoints", find_waypoints(model, mesh))

    # namespace → [(policy, resource name)] of converted WORKLOAD_SELECTOR policies
    selector_policies: dict[str, list[tuple[AuthorizationPolicy, str]]] = {}
    table = rnd.table("authorization")
    for pol in model.sorted_tuple("AuthorizationPolicy"):
        assert isinstance(pol, AuthorizationPolicy)
        converted, status, selector_scoped = table.lookup(
            pol.key, pol, partial(_policy, pol, mesh))
        if status is not None:
            statuses.append(status)
        if converted is None:
            continue
        name = authorization_resource_name(pol.namespace, pol.name)
        authz[name] = converted
        if selector_scoped:
            selector_policies.setdefault(pol.namespace, []).append((pol, name))

    pas = [p for p in model.sorted_tuple("PeerAuthentication")
           if isinstance(p, PeerAuthentication)]
    pa_index = PeerAuthIndex(pas, mesh)
    if pas:
        static = tokens.lookup("static_strict", None, lambda: static_strict_policy(mesh))
        authz[authorization_resource_name(static.namespace, static.name)] = static
        table = rnd.table("peer_authentication")
        for pa in pas:
            ns_pol, root_pol = pa_index.parents(pa.namespace)
            converted_pa = table.lookup(
                pa.key, (pa, ns_pol, root_pol),
                partial(convert_port_level, pa, ns_pol, root_pol, mesh))
            if converted_pa is not None:
                authz[authorization_resource_name(converted_pa.namespace,
                                                  converted_pa.name)] = converted_pa

    table = rnd.table("service")
    for svc in model.sorted_tuple("Service"):
        assert isinstance(svc, Service)
        address, svc_statuses = table.lookup(
            svc.key, (svc, model.namespace(svc.namespace), waypoints),
            partial(_service, svc, model, mesh, waypoints))
        statuses.extend(svc_statuses)
        if address is not None:
            addresses[service_resource_name(
                svc.namespace, service_hostname(mesh, svc.namespace, svc.name))] = address

    service_index = build_service_index(model, mesh)
    root_policies = selector_policies.get(mesh.root_namespace, [])
    scope: dict[str, tuple[Any, Any, Any]] = {}  # namespace → (policies, services, PAs) tokens
    table = rnd.table("pod")
    for pod in model.sorted_tuple("Pod"):
        assert isinstance(pod, Pod)
        ns = pod.namespace
        if (in_scope := scope.get(ns)) is None:
            candidates = root_policies if ns == mesh.root_namespace else (
                root_policies + selector_policies.get(ns, []))
            in_scope = scope[ns] = (
                tokens.canon(("policies", ns), tuple((name, pol.selector)
                                                     for pol, name in candidates)),
                tokens.canon(("services", ns), tuple(service_index.selecting.get(ns, ()))),
                tokens.canon(("peer_authentications", ns),
                             pa_index.workload_candidates(ns) if pas else ()))
        fingerprint = (pod, model.namespace(ns), model.node(pod.node_name) if pod.node_name
                       else None, waypoints, *in_scope,
                       tuple(service_index.by_endpoint_pod.get((ns, pod.name), ())))
        address, pod_statuses = table.lookup(
            pod.key, fingerprint,
            partial(_pod, pod, model, mesh, waypoints, in_scope[0], in_scope[2], service_index))
        statuses.extend(pod_statuses)
        if address is not None:
            addresses[pod_uid(mesh, ns, pod.name)] = address

    table = rnd.table("endpoint_slice")
    for es in model.sorted_tuple("EndpointSlice"):
        assert isinstance(es, EndpointSlice)
        target = model.get("Service", es.namespace, es.service_name) if es.service_name else None
        for uid, address in table.lookup(
                es.key, (es, target), partial(_endpoint_slice, es, model, mesh)):
            addresses[uid] = address

    routes, route_statuses = rnd.table("routes").lookup(
        "all", tuple(model.of_kind(k) for k in ("HTTPRoute", "Service", "Gateway", "Namespace")),
        lambda: translate_routes(model, mesh))
    l7_policies, l7_statuses = _l7_policies(model, mesh, rnd, waypoints)
    statuses += route_statuses + l7_statuses
    resources = ResourceSet(
        MappingProxyType(addresses), MappingProxyType(authz), tuple(statuses),
        MappingProxyType(routes), MappingProxyType(l7_policies),
    )
    new_memo, stats = rnd.finish()
    return resources, new_memo, stats


def _policy(pol: AuthorizationPolicy, mesh: MeshConfig,
            ) -> tuple[Authorization | None, StatusMessage | None, bool]:
    """The converted policy, its status, and whether it is WORKLOAD_SELECTOR-scoped (kept so
    a reused entry needs no message attribute reads, which are slow in betterproto)."""
    converted, status = convert_authorization_policy(pol, mesh)
    return converted, status, converted is not None and converted.scope == Scope.WORKLOAD_SELECTOR


def _service(svc: Service, model: ClusterModel, mesh: MeshConfig,
             waypoints: Mapping[tuple[str, str], Waypoint],
             ) -> tuple[Address | None, tuple[StatusMessage, ...]]:
    proto, svc_statuses = translate_service(svc, model, mesh, waypoints)
    return (Address(service=proto) if proto is not None else None), tuple(svc_statuses)


def _pod(pod: Pod, model: ClusterModel, mesh: MeshConfig,
         waypoints: Mapping[tuple[str, str], Waypoint],
         selector_policies: tuple[tuple[str, Mapping[str, str]], ...],
         pas: tuple[PeerAuthentication, ...], service_index: ServiceIndex,
         ) -> tuple[Address | None, tuple[StatusMessage, ...]]:
    policies = sorted(name for name, selector in selector_policies
                      if selects(selector, pod.labels))
    policies += workload_policy_names(pod, list(pas), mesh) if pas else []
    workload, pod_statuses = translate_pod(pod, model, mesh, waypoints, policies, service_index)
    return (Address(workload=workload) if workload is not None else None), tuple(pod_statuses)


def _endpoint_slice(es: EndpointSlice, model: ClusterModel, mesh: MeshConfig,
                    ) -> tuple[tuple[str, Address], ...]:
    return tuple((w.uid, Address(workload=w)) for w in translate_endpoint_slice(es, model, mesh))


def _l7(pol: AuthorizationPolicy, model: ClusterModel, mesh: MeshConfig,
        waypoint_keys: frozenset[tuple[str, str]],
        ) -> tuple[L7Authorization | None, tuple[StatusMessage, ...]]:
    converted, notes = convert_l7_policy(pol, model, mesh, set(waypoint_keys))
    return converted, tuple(notes)


def _l7_policies(model: ClusterModel, mesh: MeshConfig, rnd: MemoRound,
                 waypoints: Mapping[tuple[str, str], Waypoint],
                 ) -> tuple[dict[str, L7Authorization], list[StatusMessage]]:
    """`translate_l7_policies`, memoized per policy."""
    keys = rnd.table("tokens").canon("waypoint_keys", frozenset(waypoints))
    table = rnd.table("l7_authorization")
    out: dict[str, L7Authorization] = {}
    statuses: list[StatusMessage] = []
    for pol in model.sorted_tuple("AuthorizationPolicy"):
        assert isinstance(pol, AuthorizationPolicy)
        if not pol.target_refs:
            continue  # convert_l7_policy: not a waypoint policy, nothing to say
        targets = tuple(model.get("Service", ref.namespace or pol.namespace, ref.name)
                        for ref in pol.target_refs)
        converted, notes = table.lookup(pol.key, (pol, keys, targets),
                                        partial(_l7, pol, model, mesh, keys))
        statuses.extend(notes)
        if converted is not None:
            out[f"{pol.namespace}/{pol.name}"] = converted
    return out, statuses
