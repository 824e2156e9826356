"""`translate(model, mesh) -> ResourceSet`: the whole model as workload-API resources.

Called by the xDS server whenever a config source yields a new ClusterModel. Pure and
deterministic (objects are visited in (namespace, name) order). Hands back every `Address`
(workloads and services) and `Authorization` keyed by resource name, plus the status messages
produced on the way (policy conversion notes, missing waypoints, pods without IPs).
Invariant: a problem with one object never stops the others from being translated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import betterproto

from istiod_lite.translate.authorization import convert_authorization_policy
from istiod_lite.translate.l7_policies import L7_AUTHORIZATION_TYPE_URL, translate_l7_policies
from istiod_lite.translate.mesh import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    MeshConfig,
    StatusMessage,
    authorization_resource_name,
    service_resource_name,
)
from istiod_lite.translate.peer_authentication import (
    convert_port_level,
    parents,
    static_strict_policy,
    workload_policy_names,
)
from istiod_lite.translate.routes import ROUTE_CONFIGURATION_TYPE_URL, translate_routes
from istiod_lite.translate.services import build_service_index, translate_service
from istiod_lite.translate.waypoints import find_waypoints
from istiod_lite.translate.workloads import translate_endpoint_slice, translate_pod
from meshcore.model import (
    AuthorizationPolicy,
    ClusterModel,
    EndpointSlice,
    PeerAuthentication,
    Pod,
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
    mesh = mesh or MeshConfig()
    statuses: list[StatusMessage] = []
    authz: dict[str, Authorization] = {}
    addresses: dict[str, Address] = {}
    waypoints = find_waypoints(model, mesh)

    # namespace → [(policy, resource name)] of converted WORKLOAD_SELECTOR policies
    selector_policies: dict[str, list[tuple[AuthorizationPolicy, str]]] = {}
    for pol in model.sorted("AuthorizationPolicy"):
        assert isinstance(pol, AuthorizationPolicy)
        converted, status = convert_authorization_policy(pol, mesh)
        if status is not None:
            statuses.append(status)
        if converted is None:
            continue
        name = authorization_resource_name(pol.namespace, pol.name)
        authz[name] = converted
        if converted.scope == Scope.WORKLOAD_SELECTOR:
            selector_policies.setdefault(pol.namespace, []).append((pol, name))

    pas = [p for p in model.sorted("PeerAuthentication") if isinstance(p, PeerAuthentication)]
    if pas:
        static = static_strict_policy(mesh)
        authz[authorization_resource_name(static.namespace, static.name)] = static
        for pa in pas:
            ns_pol, root_pol = parents(pas, pa.namespace, mesh)
            converted = convert_port_level(pa, ns_pol, root_pol, mesh)
            if converted is not None:
                authz[authorization_resource_name(converted.namespace, converted.name)] = converted

    for svc in model.services:
        proto, svc_statuses = translate_service(svc, model, mesh, waypoints)
        statuses.extend(svc_statuses)
        if proto is not None:
            addresses[service_resource_name(proto.namespace, proto.hostname)] = Address(
                service=proto)

    service_index = build_service_index(model, mesh)
    root_policies = selector_policies.get(mesh.root_namespace, [])
    for pod in model.pods:
        assert isinstance(pod, Pod)
        candidates = root_policies if pod.namespace == mesh.root_namespace else (
            root_policies + selector_policies.get(pod.namespace, []))
        policies = sorted(name for pol, name in candidates if selects(pol.selector, pod.labels))
        policies += workload_policy_names(pod, pas, mesh) if pas else []
        workload, pod_statuses = translate_pod(pod, model, mesh, waypoints, policies,
                                               service_index)
        statuses.extend(pod_statuses)
        if workload is not None:
            addresses[workload.uid] = Address(workload=workload)

    for es in model.sorted("EndpointSlice"):
        assert isinstance(es, EndpointSlice)
        for workload in translate_endpoint_slice(es, model, mesh):
            addresses[workload.uid] = Address(workload=workload)

    routes, route_statuses = translate_routes(model, mesh)
    l7_policies, l7_statuses = translate_l7_policies(model, mesh)
    statuses += route_statuses + l7_statuses
    return ResourceSet(
        MappingProxyType(addresses), MappingProxyType(authz), tuple(statuses),
        MappingProxyType(routes), MappingProxyType(l7_policies),
    )
